"""`controlpanel.threads.started`: a call begun ahead on a daemon thread, its answer or its
exception given to whoever asks, never holding the process open as it exits."""

import subprocess
import sys
import threading
import time

import pytest

from controlpanel.threads import started


def test_the_answer_and_the_exception_reach_whoever_asks():
    assert started(lambda a, b=0: a + b, 2, b=3, name="adds").result(timeout=5) == 5
    failing = started(lambda: {}["missing"], name="fails")
    with pytest.raises(KeyError):
        failing.result(timeout=5)
    names = []
    started(lambda: names.append(threading.current_thread().name), name="named").result(timeout=5)
    assert names == ["named"]


def test_a_call_given_up_on_does_not_hold_the_process_at_exit():
    code = "from controlpanel.threads import started; import time; started(time.sleep, 60, name='slow'); print('done')"
    begun = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "done"
    assert time.monotonic() - begun < 20  # not the 60 s the call would take
