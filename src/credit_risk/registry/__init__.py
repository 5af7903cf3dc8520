"""The MLflow side: the tracking store connection, names and lookups, the gate and promotion."""
