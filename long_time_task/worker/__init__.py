"""The worker side: the Celery tasks, the executor that runs one attempt, the lease heartbeat, and recovery."""
