"""The pipeline's components (steps.py) and the checks they wrap (validation.py, infra.py)."""
