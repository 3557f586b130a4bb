"""The daemon starts, acknowledges an authenticated delivery, and the
handler sees the event."""
import json

from harness import Daemon, text_body


def test_deliver_and_handle():
    with Daemon() as d:
        resp = d.deliver(text_body("hello", "wamid.SMOKE1"))
        assert resp == {"ok": True, "events": 1, "duplicates": 0}, resp
        lines = d.wait_log(lambda l: l.get("msg") == "handled")
        assert lines[0]["text"] == "hello"
        assert lines[0]["message_id"] == "wamid.SMOKE1"
        assert lines[0]["event"] == lines[0]["id"]
        assert d.stop() == 0
