"""The pipeline's components, one per module: each reads its inputs, calls one library function
and returns its output artifacts; tfx_pipeline/dag.py wires them together."""
