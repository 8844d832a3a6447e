"""A vrrp_script timer stopped (reload, stop) at the instant its script exits must end.

Python 3.11's ``asyncio.wait_for`` returns the awaited result and drops a cancellation that
arrives in the same loop turn as that result. The script loop timed its script with it, so a
reload landing as a script exited left the old file's script running for ever beside the new
one's (and calling the daemon back). The loop times its scripts with ``asyncio.timeout`` now,
which lets the cancellation through. The script's exit has to be seen in one exact loop turn,
so the process here is a stand-in whose exit the test completes; what runs is the real loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pylvs.config import keepalived as K
from pylvs.keepalived.tracking import ScriptState, Tracking


async def test_a_script_stopped_as_it_exits_is_not_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    exits: list[asyncio.Future[int]] = []

    class Script:
        async def wait(self) -> int:
            exits.append(loop.create_future())
            return await exits[-1]

        def kill(self) -> None:
            pass

    async def spawn(*args: Any, **kwargs: Any) -> Script:
        return Script()

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    changes: list[int] = []
    tracking = Tracking(lambda: changes.append(1))
    st = ScriptState(K.VRRPScript("chk", "/bin/true", interval=0.01, timeout=5))
    st.task = loop.create_task(tracking._run_script(st))
    tracking.scripts["chk"] = st
    task = st.task
    for _ in range(100):
        if exits:
            break
        await asyncio.sleep(0.01)
    assert len(exits) == 1, "the script was not started"
    exits[0].set_result(0)
    loop.call_soon(tracking.stop)  # the reload's stop, in the same turn the exit is seen
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done, "the script timer went on after stop()"
    assert task.cancelled()
    await asyncio.sleep(0.05)
    assert len(exits) == 1, "the script ran again after stop()"
