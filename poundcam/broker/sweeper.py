"""The sweeper: gives back items left "running" by a worker that is gone.

A worker that dies mid-message leaves its items "running". Redis redelivers the message itself
after the visibility timeout, but only while it still exists; when it does not (it was
acknowledged, dropped or lost with the broker) nothing else would ever finish those items.
Once an item has been "running" longer than ``POUNDCAM_VISIBILITY_TIMEOUT_S``, the sweeper puts
it back to "queued" and sends a message for it, or fails it with ``retries_exhausted`` once it
has been claimed ``POUNDCAM_MAX_ATTEMPTS`` times. Run by every worker every
``POUNDCAM_SWEEP_INTERVAL_S`` and by ``poundcam sweep``; sweepers running at once are safe
(each row changes once).
"""

from __future__ import annotations

import logging

from ..db import Sweep, session_scope, sweep_abandoned

log = logging.getLogger(__name__)


def sweep(settings, sessions) -> Sweep:
    """Sweep once; returns what was requeued (and re-sent) and what failed.

    Raises:
        EnqueueError: items were requeued but a message could not be sent (``poundcam resend``
            sends them later; they are "queued" either way).
    """
    from ..client import client_for  # the client is the one producer of messages

    with session_scope(sessions) as s:
        swept = sweep_abandoned(s, settings.visibility_timeout_s, settings.max_attempts)
    for job_id, refs in swept.requeued.items():
        log.warning(
            "job %s: %d item(s) abandoned while running, requeued",
            job_id,
            len(refs),
            extra={"job_id": job_id},
        )
        client_for(settings).enqueue(job_id, [{"item_id": i, "uri": u} for i, u in refs])
    if swept.failed:
        log.warning(
            "%d item(s) abandoned too often, failed with retries_exhausted: %s",
            len(swept.failed),
            swept.failed[:20],
        )
    return swept
