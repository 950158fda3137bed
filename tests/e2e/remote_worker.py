"""Runs in a separate process: resumes an action's trace from its traceparent and tracestate, and logs under it."""

import asyncio
import logging
import sys

from audit_producer import AuditProducer, resume_trace
from audit_producer.config import Settings


async def main(traceparent: str, tracestate: str, bootstrap: str, audit_topic: str, log_topic: str) -> None:
    settings = Settings(bootstrap_servers=bootstrap, audit_topic=audit_topic, execution_log_topic=log_topic)
    async with AuditProducer("remote-worker", settings) as audit:
        logger = logging.getLogger("worker.remote")
        logger.setLevel(logging.INFO)
        logger.addHandler(audit.logs.handler())
        logger.info("outside any trace: not shipped")
        with resume_trace(traceparent, tracestate):  # the tenant travels in tracestate
            logger.info("remote step ran", extra={"step": "provision"})


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
