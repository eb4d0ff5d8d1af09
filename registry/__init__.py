"""Model registry: exported SavedModels as numbered versions in TF Serving's layout, with labels."""
