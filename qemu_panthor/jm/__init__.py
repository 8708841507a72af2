"""The Job Manager of a JM Mali (Midgard/Bifrost): JOB_CONTROL and its job slots."""

from .job_slots import JobControl, JobSlot

__all__ = ["JobControl", "JobSlot"]
