"""Hyperparameter search over config keys with KerasTuner (`imgclf tune`)."""
