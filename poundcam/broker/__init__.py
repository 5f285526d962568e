"""The broker's side of the pipeline: checking raw queue entries before Celery sees them, the
dead-letter list that holds the ones refused, and the sweeper that gives back abandoned items."""
