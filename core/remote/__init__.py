"""prunegym.core.remote: a device worker and its Redis queue (torch-free)."""
