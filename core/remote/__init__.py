"""prunegym.core.remote: a device worker, its Redis queue and the search-side client (torch-free).

Needs numpy, onnx, onnxruntime (or OpenVINO) and redis-py (``pip install 'prunegym[remote]'``), never torch: a
worker runs on a device where PyTorch is not installed.
"""

from __future__ import annotations

from prunegym.core.remote.client import RemoteDevice, RemoteInterleaved
from prunegym.core.remote.jobs import (
    DEFAULT_MAX_JOB_BYTES,
    JOB_FORMAT,
    MAGIC,
    BadJob,
    JobSpec,
    decode_job,
    encode_job,
)
from prunegym.core.remote.queue import REMOTE_MISSING, DeviceInfo, DeviceQueue, JobLost, RemoteTimeout, cache_key
from prunegym.core.remote.worker import DeviceWorker, measure_job

__all__ = [
    "DEFAULT_MAX_JOB_BYTES",
    "JOB_FORMAT",
    "MAGIC",
    "REMOTE_MISSING",
    "BadJob",
    "DeviceInfo",
    "DeviceQueue",
    "DeviceWorker",
    "JobLost",
    "JobSpec",
    "RemoteDevice",
    "RemoteInterleaved",
    "RemoteTimeout",
    "cache_key",
    "decode_job",
    "encode_job",
    "measure_job",
]
