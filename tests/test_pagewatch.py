"""scripts/pagewatch.py's run tracking, fed the messages a Streamlit page exchanges."""

from __future__ import annotations

import sys
import time

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from pagewatch import ScriptRuns  # noqa: E402


class FakeSocket:
    def __init__(self) -> None:
        self.handlers = {}

    def on(self, event, handler) -> None:
        self.handlers[event] = handler


class FakePage(FakeSocket):
    def open_socket(self) -> FakeSocket:
        ws = FakeSocket()
        self.handlers["websocket"](ws)
        return ws


def _rerun() -> bytes:
    msg = BackMsg()
    msg.rerun_script.query_string = ""
    return msg.SerializeToString()


def _finished(status) -> bytes:
    msg = ForwardMsg()
    msg.script_finished = status
    return msg.SerializeToString()


def _delta() -> bytes:
    msg = ForwardMsg()
    msg.delta.new_element.markdown.body = "hello"
    return msg.SerializeToString()


def test_idle_only_after_the_run_asked_for_has_ended():
    page = FakePage()
    runs = ScriptRuns(page)
    ws = page.open_socket()
    assert not runs.idle(quiet=0)  # nothing has run yet
    ws.handlers["framesent"](_rerun())
    ws.handlers["framereceived"](_delta())
    assert not runs.idle(quiet=0)  # running: output arrives, no end yet
    # a run cut short for a newer one is not the end of the newer one
    ws.handlers["framereceived"](_finished(ForwardMsg.FINISHED_EARLY_FOR_RERUN))
    assert not runs.idle(quiet=0)
    ws.handlers["framereceived"](_finished(ForwardMsg.FINISHED_SUCCESSFULLY))
    assert runs.idle(quiet=0)
    assert not runs.idle(quiet=60)  # ended, but not yet quiet for a minute
    ws.handlers["framesent"](_rerun())  # a click: a new run asked for
    assert not runs.idle(quiet=0)
    time.sleep(0.01)
    ws.handlers["framereceived"](_finished(ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY))
    assert runs.idle(quiet=0)
    ws.handlers["framesent"]("a text frame")  # ignored, never an error
    assert runs.idle(quiet=0)
