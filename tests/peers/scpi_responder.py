#!/usr/bin/env python3
"""A small line-protocol instrument for the tests, on a serial line (one end
of a socat pty pair) or a TCP port. It speaks two dialects:

  SCPI (Keithley 24xx style, LF):  *IDN?  *CLS  :MEAS:CURR?  :MEAS:VOLT?
      :SOUR:VOLT:LEV?  :SOUR:VOLT:LEV <v>  :SYST:ERR:COUN?
      Unknown queries get no reply (the instrument queues an error), as real SCPI.
  ESPEC chamber style (CR LF):  TYPE?  TEMP?  HUMI?  TEMP,S<v>  -> OK | NA:...

Faults, for resync tests:
  --noise-every N   every Nth reply is preceded by line noise (binary junk + LF)
  --garble-every N  every Nth reply is replaced by binary junk
  --silent-every N  every Nth query gets no reply at all
Prints "ready" when serving; logs each command to stderr.
"""
import argparse
import os
import socket
import sys
import termios
import tty

state = {"volt": 1.5, "temp_set": 25.0, "errors": 0, "n": 0}


def answer(cmd):
    c = cmd.strip()
    if c == "*IDN?":
        return "KEITHLEY INSTRUMENTS INC.,MODEL 2450,04412345,1.7.3"
    if c in ("*CLS", "*RST"):
        state["errors"] = 0
        return None
    if c == ":MEAS:CURR?":
        return "+1.234567E-03"
    if c == ":MEAS:VOLT?":
        return f"{state['volt']:+.6E}"
    if c == ":SOUR:VOLT:LEV?":
        return f"{state['volt']:+.6E}"
    if c.startswith(":SOUR:VOLT:LEV "):
        try:
            state["volt"] = float(c.split(" ", 1)[1])
        except ValueError:
            state["errors"] += 1
        return None
    if c == ":SYST:ERR:COUN?":
        return str(state["errors"])
    if c == "TYPE?":
        return "SH-641,S,F"
    if c == "TEMP?":
        return f"23.5,{state['temp_set']:.1f},100.0,-40.0"
    if c == "HUMI?":
        return "45.0,50.0,95.0,10.0"
    if c.startswith("TEMP,S"):
        try:
            v = float(c[6:])
        except ValueError:
            return "NA:DATA NOT READY"
        if not -40.0 <= v <= 100.0:
            return "NA:OUT OF RANGE"
        state["temp_set"] = v
        return "OK"
    if c.endswith("?"):
        state["errors"] += 1
        return None
    return None


def serve(read_line, write, ending, a):
    print("ready", flush=True)
    while True:
        line = read_line()
        if line is None:
            return
        line = line.decode(errors="replace").strip()
        if not line:
            continue
        state["n"] += 1
        n = state["n"]
        print(f"<- {line!r}", file=sys.stderr, flush=True)
        reply = answer(line)
        if reply is None:
            continue
        if a.silent_every and n % a.silent_every == 0:
            continue
        if a.garble_every and n % a.garble_every == 0:
            write(b"\x00\xff\x13\xfe\x81" + ending)
            continue
        if a.noise_every and n % a.noise_every == 0:
            write(b"\xfe\x00\x8f" + ending)
        write(reply.encode() + ending)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device")
    ap.add_argument("--port", type=int)
    ap.add_argument("--crlf", action="store_true", help="end replies with CR LF")
    ap.add_argument("--noise-every", type=int, default=0)
    ap.add_argument("--garble-every", type=int, default=0)
    ap.add_argument("--silent-every", type=int, default=0)
    a = ap.parse_args()
    ending = b"\r\n" if a.crlf else b"\n"
    if a.device:
        fd = os.open(a.device, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        f = os.fdopen(fd, "rb+", buffering=0)
        buf = bytearray()

        def read_line():
            while b"\n" not in buf and b"\r" not in buf:
                chunk = f.read(256)
                if not chunk:
                    return None
                buf.extend(chunk)
            i = min(x for x in (buf.find(b"\n"), buf.find(b"\r")) if x >= 0)
            line = bytes(buf[:i])
            del buf[:i + 1]
            return line

        serve(read_line, lambda b: (f.write(b), f.flush()), ending, a)
    else:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", a.port))
        srv.listen(1)
        print("ready", flush=True)
        while True:
            conn, _ = srv.accept()
            rf = conn.makefile("rb")
            serve(lambda: rf.readline() or None, conn.sendall, ending, a)
            conn.close()


if __name__ == "__main__":
    main()
