#!/usr/bin/env python3
"""io_post.py - the I/O scenario's client: post EVENTS text messages, each
in its own conversation (a distinct `from`/wa_id), as fast as CONNECTIONS
keep-alive connections allow, BATCH messages per POST (one Meta envelope
whose `messages` list has BATCH messages from BATCH customers, as Insider
and Meta may send).  Every server gets the same bodies.

    python3 io_post.py PORT TOKEN EVENTS BATCH CONNECTIONS NONCE

Bodies are built from payload_text.json before the clock starts.  Prints
one line, IOPOST {json}: first_post and last_ack (Unix seconds: the first
request written, the last 2xx answer read), requests, events (posted),
acked_events (the sum of "events" in the answers), duplicates, statuses
({code: count}), errors (connections that failed) and last_error.
"""
import asyncio
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = "/webhooks/insider"


def bodies(events, batch, nonce):
    """The POST bodies: BATCH messages each, customers 905330000000 + i."""
    with open(os.path.join(HERE, "payload_text.json"), encoding="utf-8") as f:
        tmpl = f.read().strip()
    out = []
    for start in range(0, events, batch):
        idx = range(start, min(start + batch, events))
        doc = json.loads(tmpl.replace("@ID@", "X").replace("@WA@", "W")
                         .replace("@TEXT@", "menu"))
        value = doc["entry"][0]["changes"][0]["value"]
        contact, message = value["contacts"][0], value["messages"][0]
        value["contacts"], value["messages"] = [], []
        for i in idx:
            wa = str(905330000000 + i)
            value["contacts"].append(dict(contact, wa_id=wa))
            value["messages"].append(dict(
                message, id="wamid.HBgMOTA1MzMwMDAwMDAwFQIAEhgg%s%08d" % (
                    nonce, i), **{"from": wa}))
        out.append((json.dumps(doc, separators=(",", ":")).encode(),
                    len(idx)))
    return out


class Run:
    def __init__(self, port, token, work):
        self.port = port
        self.head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "User-Agent: Insider-Webhook/1.0\r\n"
                     "Content-Type: application/json\r\n"
                     "Authorization: Bearer %s\r\nContent-Length: " % (
                         PATH, port, token)).encode()
        self.work = work
        self.next = 0
        self.first_post = None
        self.last_ack = None
        self.requests = 0
        self.acked_events = 0
        self.duplicates = 0
        self.statuses = {}
        self.errors = 0
        self.last_error = None

    async def connection(self):
        reader = writer = None
        while self.next < len(self.work):
            body, _ = self.work[self.next]
            self.next += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", self.port)
                if self.first_post is None:
                    self.first_post = time.time()
                writer.write(self.head + str(len(body)).encode() +
                             b"\r\n\r\n" + body)
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), 60)
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length, close = 0, False
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    k = k.strip().lower()
                    if k == "content-length":
                        length = int(v)
                    elif k == "connection" and "close" in v.lower():
                        close = True
                resp = await asyncio.wait_for(reader.readexactly(length), 60)
                self.requests += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    self.last_ack = time.time()
                    try:
                        doc = json.loads(resp)
                        self.acked_events += int(doc.get("events", 0))
                        self.duplicates += int(doc.get("duplicates", 0))
                    except ValueError:
                        pass
                if close:
                    writer.close()
                    reader = writer = None
            except (OSError, ValueError, IndexError,
                    asyncio.IncompleteReadError,
                    asyncio.TimeoutError) as e:
                self.errors += 1
                self.last_error = "%s: %s" % (type(e).__name__, e)
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()


async def main(port, token, events, batch, conns, nonce):
    run = Run(port, token, bodies(events, batch, nonce))
    await asyncio.gather(*[run.connection() for _ in range(conns)])
    return {"first_post": run.first_post, "last_ack": run.last_ack,
            "requests": run.requests, "events": events,
            "acked_events": run.acked_events,
            "duplicates": run.duplicates,
            "statuses": {str(k): v for k, v in run.statuses.items()},
            "errors": run.errors, "last_error": run.last_error}


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    a = sys.argv[1:]
    r = asyncio.run(main(int(a[0]), a[1], int(a[2]), int(a[3]), int(a[4]),
                         a[5]))
    print("IOPOST " + json.dumps(r), flush=True)
