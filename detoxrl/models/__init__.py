"""Model references (hub id, local path, embedded packaged copies) and model loading for both families."""
