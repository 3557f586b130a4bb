"""The README tutorial, run as written (only the ports are changed to free
ones, `./walua` points at the binary under test, the fake provider at
the checkout's `tests/fakes/`, and `make run`, which would build, starts
the already built demo in the background)."""
import os
import re
import subprocess
import tempfile

from harness import ROOT, WALUA, free_port


def tutorial_script():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Tutorial", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 4, "tutorial code blocks not found"
    return blocks


def test_tutorial_runs_verbatim():
    blocks = tutorial_script()
    ports = []
    for _ in range(9):
        ports.append(free_port(ports))
    (demo, mine, demo_admin, mine_admin, fake, reply, reply_admin, kapso,
     insider) = ports
    script = ["set -eu",
              "trap 'kill ${DEMO_PID:-} ${WALUA_PID:-} ${REPLY_PID:-} "
              "${META_PID:-} ${KAPSO_PID:-} ${INSIDER_PID:-} "
              "2>/dev/null || true' EXIT"]
    demo_running = False
    for b in blocks:
        b = b.replace("make run\n",
                      '"$WALUA" serve > demo.log 2>&1 & DEMO_PID=$!\n'
                      "sleep 1\n")
        b = b.replace("./walua ", '"$WALUA" ')
        b = b.replace("127.0.0.1:8080", "127.0.0.1:%d" % demo)
        b = b.replace("127.0.0.1:8081", "127.0.0.1:%d" % mine)
        b = b.replace("127.0.0.1:9090", "127.0.0.1:%d" % demo_admin)
        b = b.replace("127.0.0.1:9091", "127.0.0.1:%d" % mine_admin)
        b = b.replace("--port 8082", "--port %d" % fake)
        b = b.replace("127.0.0.1:8082", "127.0.0.1:%d" % fake)
        b = b.replace("--port 8084", "--port %d" % kapso)
        b = b.replace("127.0.0.1:8084", "127.0.0.1:%d" % kapso)
        b = b.replace("--port 8085", "--port %d" % insider)
        b = b.replace("127.0.0.1:8085", "127.0.0.1:%d" % insider)
        b = b.replace("127.0.0.1:8083", "127.0.0.1:%d" % reply)
        b = b.replace("127.0.0.1:9093", "127.0.0.1:%d" % reply_admin)
        b = b.replace("python3 tests/fakes/", "python3 %s/tests/fakes/"
                      % ROOT)
        script.append(b)
        if demo_running and "DEMO_PID=$!" not in b:
            # the reader stops the demo with Ctrl-C after trying it
            script.append("sleep 0.5\nkill $DEMO_PID\nwait $DEMO_PID || true")
            demo_running = False
        if "DEMO_PID=$!" in b:
            demo_running = True
    folder = tempfile.mkdtemp(prefix="walua-tutorial-")
    env = dict(os.environ, WALUA=WALUA,
               WALUA_LISTEN="127.0.0.1:%d" % demo,
               WALUA_ADMIN_LISTEN="127.0.0.1:%d" % demo_admin)
    for v in ("INSIDER_WEBHOOK_TOKEN", "META_ACCESS_TOKEN", "META_APP_SECRET",
              "KAPSO_API_KEY", "KAPSO_WEBHOOK_SECRET", "INSIDER_AUTH_KEY"):
        env.pop(v, None)
    with open(os.path.join(folder, "tutorial.sh"), "w") as f:
        f.write("\n".join(script))
    p = subprocess.run(["bash", "tutorial.sh"], cwd=folder,
                       env=env, capture_output=True, text=True, timeout=90)
    out = p.stdout
    logs = ""
    for name in ("demo.log", "mybot/walua.log"):
        try:
            with open(os.path.join(folder, name)) as f:
                logs += f.read()
        except OSError:
            pass
    assert p.returncode == 0, (p.returncode, out, p.stderr, logs[-3000:])
    # three curl answers and the three simulate prints
    assert out.count('{"ok":true,"events":1,"duplicates":0}') == 6, out
    assert "configuration ok" in out, out
    assert '"msg":"greeting"' in out and '"name":"Ada"' in out, out
    assert '"reload ok"' in out and '"msg":"hi there"' in out, out
    replied = [l for l in out.splitlines() if '"msg":"replied"' in l]
    assert len(replied) == 3, out
    for provider, id_start in (("meta", "wamid."), ("kapso", "wamid."),
                               ("insider", "whatsapp-")):
        assert any('"provider":"%s"' % provider in l and
                   '"id":"%s' % id_start in l for l in replied), replied
    assert "POST /v21.0/106540352242922/messages HTTP/1.1\" 200" in out, out
    assert "POST /meta/whatsapp/v24.0/647015955153740/messages HTTP/1.1\" " \
        "200" in out, out
    assert "POST /v1/conversational/send HTTP/1.1\" 200" in out, out
    assert 'walua_events_acked_total{provider="insider",kind="message"} 1' \
        in out, out
    with open(os.path.join(folder, "demo.log")) as f:
        demo_log = f.read()
    assert '"msg":"reply"' in demo_log and "Hi Ada! What can I do" in \
        demo_log, demo_log
    assert "AddressSanitizer" not in logs and "runtime error" not in logs
