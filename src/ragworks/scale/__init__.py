"""Scale out: Spark ingestion into Delta tables, batch inference and evaluation, Model Serving deployment."""
