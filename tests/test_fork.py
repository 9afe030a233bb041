"""Fork and worker processes, for real: children get a fresh transport and nothing is sent twice."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import pytest
from helpers import run_python

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX-only")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return run_python("-c", textwrap.dedent(code))


def test_a_forked_child_gets_a_fresh_transport_and_never_resends_the_parents_queue(
    collector, write_key
):
    result = run(
        f"""
        import os, threading
        from htevents_logging import HtEvents
        htevents = HtEvents({write_key!r}, host={collector.url!r}, flush_interval=60)
        htevents.track(user_id="parent", event="queued before fork")
        parent_transport = htevents._transport
        pid = os.fork()
        if pid == 0:
            names = [t.name for t in threading.enumerate()]
            assert "htevents-transport" not in names, names   # started lazily
            assert htevents._transport.queue_depth() == 0      # a new, empty queue
            htevents.track(user_id="child", event="from child")
            raise SystemExit(0)                                 # exit delivers the child's queue
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        htevents.track(user_id="parent", event="after fork")
        """
    )
    assert result.returncode == 0, result.stderr
    assert collector.wait_for_events(3, timeout=10), collector.events
    events = collections.Counter(e["event"] for e in collector.events)
    assert events == {"queued before fork": 1, "from child": 1, "after fork": 1}


def test_a_forked_childs_stats_count_what_the_child_rejected(collector, write_key):
    # Regression: the client kept the parent's Stats object, so what a child rejected was
    # counted where the child's stats() never looked.
    result = run(
        f"""
        import os
        from htevents_logging import HtEvents
        htevents = HtEvents({write_key!r}, host={collector.url!r}, flush_interval=60)
        htevents.track(user_id="parent", event="starts the transport")
        pid = os.fork()
        if pid == 0:
            try:
                htevents.track(user_id="child")  # no event: rejected
            except ValueError:
                pass
            assert htevents.stats()["rejected_by_reason"] == {{"invalid": 1}}, htevents.stats()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        assert htevents.stats()["rejected"] == 0
        """
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_events_from_multiprocessing_workers_are_all_delivered(
    collector, method, tmp_path, write_key
):
    script = tmp_path / "workers.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing
            from htevents_logging import HtEvents

            def make():
                return HtEvents({write_key!r}, host={collector.url!r}, flush_interval=60)

            def work(n):
                htevents = make()   # spawn: a new client; fork: the parent's, renewed
                for i in range(25):
                    htevents.track(user_id=f"worker-{{n}}", event=f"job {{i}}")
                # no flush, no close: the worker's exit must deliver

            if __name__ == "__main__":
                make().track(user_id="parent", event="parent")
                ctx = multiprocessing.get_context({method!r})
                workers = [ctx.Process(target=work, args=(n,)) for n in range(4)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join(30)
                    assert w.exitcode == 0, w.exitcode
            """
        )
    )
    result = run_python(str(script), timeout=90)
    assert result.returncode == 0, result.stderr
    assert collector.wait_for_events(101, timeout=10), len(collector.events)
    ids = [e["messageId"] for e in collector.events]
    assert len(ids) == len(set(ids)) == 101


def test_a_warning_lock_held_by_a_parent_thread_at_fork_never_blocks_the_child(write_key):
    # Regression: the rate limiter's lock was inherited as it was; a parent thread inside a
    # warning at the fork left it held forever, and the child's first warning hung its call.
    result = run(
        f"""
        import os, signal, threading
        from htevents_logging import HtEvents, _diagnostics
        client = HtEvents({write_key!r}, host="http://127.0.0.1:9", flush_interval=60)
        client.close(0.1)
        held, release = threading.Event(), threading.Event()
        def holder():
            with _diagnostics._lock:
                held.set()
                release.wait()
        threading.Thread(target=holder, daemon=True).start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)  # a hang is killed, and seen by the parent
            client.track(user_id="u", event="after close")  # dropped: a warning
            os._exit(0)
        release.set()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        """
    )
    assert result.returncode == 0, result.stderr


RAW_FORK = """
import logging, os, sys
from htevents_logging import HtEvents, HtEventsHandler, _lifecycle

key, url, marker = sys.argv[1:4]
if marker == "getpid":  # a platform without MADV_WIPEONFORK: every check asks getpid()
    _lifecycle._marker_works = False  # (the client reads the marker itself: change it in place)
    _lifecycle.unforked[0] = 0
htevents = HtEvents(key, host=url, flush_interval=60)
logger = logging.getLogger("app")
logger.addHandler(HtEventsHandler(client=htevents))
logger.setLevel(logging.INFO)
htevents.track(user_id="parent", event="queued before fork")

# As uWSGI forks its workers (from C): none of the package's at-fork hooks runs in the child.
_lifecycle._after_fork_in_child = lambda: None
pid = os.fork()
if pid == 0:
    htevents.track(user_id="child", event="tracked in child")
    logger.info("logged in child", extra={"htevent": {"userId": "child"}})
    os._exit(0 if htevents.flush(5) else 3)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
assert htevents.flush(5)
"""


@pytest.mark.parametrize("marker", ["wiped page", "getpid"])
def test_a_child_forked_without_the_fork_hooks_is_noticed(collector, write_key, marker):
    # Regression: uWSGI forks from C (no --lazy-apps), so os.register_at_fork hooks never ran;
    # a worker's events went into the parent's queue, with no thread to send them: 0 of 10
    # arrived, queue_depth grew, and nothing was reported. The child notices by the page the
    # kernel wiped for it, or (where there is no such page) by its pid.
    done = run_python("-c", RAW_FORK, write_key, collector.url, marker)
    assert done.returncode == 0, done.stderr
    assert collector.wait_for_events(3, 10), done.stderr
    names = collections.Counter(event["event"] for event in collector.events)
    assert names == {"queued before fork": 1, "tracked in child": 1, "logged in child": 1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_WIPEONFORK is Linux's")
def test_the_fork_marker_reads_one_here_and_zero_in_a_child_until_it_is_noticed():
    result = run(
        """
        import os
        from htevents_logging import _lifecycle

        assert _lifecycle._marker_works and _lifecycle.unforked[0] == 1
        _lifecycle._after_fork_in_child = lambda: None  # a fork from C: no hooks run
        pid = os.fork()
        if pid == 0:
            wiped = _lifecycle.unforked[0]
            _lifecycle.notice_fork()
            os._exit(10 * wiped + _lifecycle.unforked[0])  # 1: wiped, then marked again
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 1, status
        assert _lifecycle.unforked[0] == 1  # the parent's own page is untouched
        """
    )
    assert result.returncode == 0, result.stderr


def test_a_child_forked_by_a_callback_on_the_transport_thread_logs_events(collector, write_key):
    # The transport thread is told by a context variable set in its own context. A callback
    # that forks leaves the child's one thread holding that context: the fork hook clears it,
    # so what the child logs is sent, not dropped as "logged on the transport thread".
    result = run(
        f"""
        import logging, os, threading
        from htevents_logging import HtEventsHandler
        from htevents_logging._transport import is_transport_thread
        handler = HtEventsHandler(
            write_key={write_key!r}, host={collector.url!r}, flush_interval=0.1
        )
        logger = logging.getLogger("forked.by.callback")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        child = []
        forked = threading.Event()

        def fork_here(error, message):
            assert is_transport_thread()
            pid = os.fork()
            if pid == 0:
                on_transport = is_transport_thread()
                logger.info("From the forked child", extra={{"htevent": {{"userId": "c"}}}})
                ok = handler.client.flush(10) and not on_transport
                os._exit(0 if ok else 1)
            child.append(pid)
            forked.set()

        handler.client.track(user_id="p", event="Forks", callback=fork_here)
        assert forked.wait(10)
        _, status = os.waitpid(child[0], 0)
        assert status == 0, status
        handler.close()
        """
    )
    assert result.returncode == 0, result.stderr
    assert collector.wait_for_events(2, timeout=10), collector.events
    assert sorted(e["event"] for e in collector.events) == ["Forks", "From the forked child"]
