"""Run long jobs on Celery workers, with every task tracked as a database row."""
