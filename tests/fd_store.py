#!/usr/bin/env python3
"""A stand-in for systemd's file-descriptor store, for tests where PID 1 is not systemd.

    fd_store.py NOTIFY_SOCKET LOG_PREFIX COMMAND [ARG...]

Runs COMMAND as systemd runs the main process of a unit with Type=notify,
NotifyAccess=main, FileDescriptorStoreMax= and Restart=always:

- NOTIFY_SOCKET is set to a datagram socket this process binds; messages from the
  main process only (checked with SCM_CREDENTIALS) are read: `FDSTORE=1` with
  `FDNAME=` keeps the descriptors sent with it (SCM_RIGHTS) under that name (one entry
  per name: a new one replaces the old, as systemd's de-duplication does for the same
  file), `FDSTOREREMOVE=1` drops the entries of `FDNAME=`, `READY=1` is reported;
- when the process exits or is killed, it is started again with the stored
  descriptors from fd 3 on, `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (its own
  pid, set after fork as systemd does); the descriptors stay stored meanwhile;
- each process writes stdout and stderr to LOG_PREFIX-N.log (N = 1, 2, ...).

Events are printed on stdout, one per line, flushed: `started PID`, `ready PID`,
`store NAME,NAME...` (after each change), `exited PID CODE` or `killed PID SIGNAL`,
`gave-up` (5 starts that ended within a second each), `held`, `done`. After SIGUSR1
a process that ends is not started again (`held`) until SIGUSR2, as while systemd waits
`RestartSec=` or an administrator holds the unit. On SIGTERM or SIGINT it stops the
process (SIGTERM, SIGKILL after 10 s), closes the store and exits.
"""

import array
import os
import select
import signal
import socket
import struct
import sys
import time

CREDS = struct.calcsize("iII")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    notify_path, log_prefix, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    store = []  # (name, fd), in the order stored
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(notify_path):
        os.unlink(notify_path)
    sock.bind(notify_path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    stopping = []
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    holding = []
    signal.signal(signal.SIGUSR1, lambda *_: holding.append(True))
    signal.signal(signal.SIGUSR2, lambda *_: holding.clear())

    def say(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def spawn(n):
        names = [name for name, _ in store]
        fds = [fd for _, fd in store]
        pid = os.fork()
        if pid == 0:
            try:
                import fcntl

                high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
                for i, fd in enumerate(high):
                    os.dup2(fd, 3 + i, inheritable=True)
                log = os.open(
                    "%s-%d.log" % (log_prefix, n),
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                    0o644,
                )
                os.dup2(log, 1)
                os.dup2(log, 2)
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                env = dict(os.environ)
                env["NOTIFY_SOCKET"] = notify_path
                for key in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
                    env.pop(key, None)
                if fds:
                    env["LISTEN_FDS"] = str(len(fds))
                    env["LISTEN_FDNAMES"] = ":".join(names)
                    env["LISTEN_PID"] = str(os.getpid())
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
                    signal.signal(sig, signal.SIG_DFL)
                os.execvpe(command[0], command, env)
            finally:
                os._exit(127)
        say("started %d" % pid)
        return pid

    def receive(main_pid):
        try:
            data, anc, _, _ = sock.recvmsg(
                4096,
                socket.CMSG_SPACE(64 * 4) + socket.CMSG_SPACE(CREDS),
                socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT,
            )
        except BlockingIOError:
            return False
        fds, sender = [], None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                fds.extend(got)
            elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = struct.unpack("iII", payload[:CREDS])[0]
        if sender != main_pid:
            say("ignored %s" % sender)
            for fd in fds:
                os.close(fd)
            return True
        fields = {}
        for line in data.decode(errors="replace").splitlines():
            key, _, value = line.partition("=")
            fields[key] = value
        name = fields.get("FDNAME", "stored")
        changed = False
        if fields.get("FDSTOREREMOVE") == "1" or (fields.get("FDSTORE") == "1" and fds):
            for entry in [e for e in store if e[0] == name]:
                os.close(entry[1])
                store.remove(entry)
                changed = True
        if fields.get("FDSTORE") == "1":
            store.extend((name, fd) for fd in fds)
            changed = changed or bool(fds)
        else:
            for fd in fds:
                os.close(fd)
        if changed:
            say("store " + ",".join(n for n, _ in store))
        if fields.get("READY") == "1":
            say("ready %d" % main_pid)
        return True

    n = 1
    pid = spawn(n)
    started = time.monotonic()
    quick = 0
    gave_up = False
    while True:
        if stopping and pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            pid = None
        if stopping:
            break
        select.select([sock, wake_r], [], [], 0.5)
        try:
            while wake_r.recv(64):
                pass
        except BlockingIOError:
            pass
        while receive(pid):
            pass
        done, status = os.waitpid(-1, os.WNOHANG) if pid else (0, 0)
        if done == pid and pid:
            while receive(pid):  # what it said before it went
                pass
            if os.WIFSIGNALED(status):
                say("killed %d %d" % (pid, os.WTERMSIG(status)))
            else:
                say("exited %d %d" % (pid, os.WEXITSTATUS(status)))
            pid = None
            quick = quick + 1 if time.monotonic() - started < 1 else 0
            if quick >= 5:
                say("gave-up")
                gave_up = True
            elif holding:
                say("held")
        if pid is None and not holding and not gave_up:
            n += 1
            pid = spawn(n)
            started = time.monotonic()
    for _, fd in store:
        os.close(fd)
    sock.close()
    os.unlink(notify_path)
    say("done")


if __name__ == "__main__":
    main()
