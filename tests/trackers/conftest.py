"""The namespace lab of ``pylvs keepalived`` (tests/keepalived), for the trackers' end-to-end tests."""

from tests.keepalived.conftest import lab

__all__ = ["lab"]
