#!/usr/bin/env python3
"""An independent Modbus server for the tests: pymodbus serving the registers
a firmware profile describes, at each point's `sim.base` value.

The encoding here is Python's `struct`, not the Rust codec under test, so a
value the agent reads correctly from this server is correct on the wire.

  pymodbus_server.py --profile P.toml --transport tcp --port N [--invalid ADDR,...]
  pymodbus_server.py --profile P.toml --transport rtu-over-tcp --port N
  pymodbus_server.py --profile P.toml --transport serial --device /dev/pts/X [--baud 9600]

--invalid removes input/holding registers (exception 2 for any read touching
them). --fill-gaps N fills up to N unused registers between points with 0,
as a real meter has other quantities there. --trace prints a line per request
("request fc=4 address=0 count=76") and per exception response ("exception
fc=132"), so tests can count what a master really sends. Prints "ready" when
serving.
"""
import argparse
import asyncio
import logging
import struct
import sys
import tomllib

from pymodbus import FramerType
from pymodbus.datastore import (ModbusDeviceContext, ModbusServerContext,
                                ModbusSparseDataBlock)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

FMT = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q",
       "f32": "f", "f64": "d"}


def words(value, ptype, byte_order, word_order):
    fmt = FMT[ptype]
    if fmt in "HhIiQq":
        value = int(round(value))
    raw = struct.pack(">" + fmt, value)
    ws = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        ws.reverse()
    if byte_order == "little":
        ws = [w[::-1] for w in ws]
    return [int.from_bytes(w, "big") for w in ws]


def build(profile, invalid, fill_gaps):
    m = profile.get("modbus", {})
    bo, wo = m.get("byte_order", "big"), m.get("word_order", "big")
    regs = {"input": {}, "holding": {}}
    bits = {"coil": {}, "discrete": {}}
    sfs = {p["name"]: p.get("sim", {}).get("base", 0.0) for p in profile["points"]}
    for p in profile["points"]:
        kind, addr, ptype = p["register"], p["address"], p["type"]
        base = p.get("sim", {}).get("base", 0.0)
        if kind in bits:
            bits[kind][addr] = bool(base)
            continue
        if ptype == "string":
            text = p.get("sim", {}).get("text", "").encode().ljust(2 * p["length"], b"\0")
            ws = [int.from_bytes(text[i:i + 2], "big") for i in range(0, len(text), 2)]
        elif ptype == "bit":
            ws = [(1 << p["bit"]) if base else 0]
            ws[0] |= regs[kind].get(addr, 0)
        else:
            scale = p.get("scale", 1.0)
            if "scale_factor" in p:
                scale *= 10 ** sfs[p["scale_factor"]]
            raw = (base - p.get("offset", 0.0)) / scale
            ws = words(raw, ptype, p.get("byte_order", bo), p.get("word_order", wo))
        for i, w in enumerate(ws):
            regs[kind][addr + i] = w
    for kind in regs:
        addrs = sorted(regs[kind])
        for a, b in zip(addrs, addrs[1:]):
            if 1 < b - a <= fill_gaps + 1:
                for g in range(a + 1, b):
                    regs[kind][g] = 0
        for a in invalid:
            regs[kind].pop(a, None)
    block = lambda d: ModbusSparseDataBlock(d) if d else ModbusSparseDataBlock({65535: 0})
    return ModbusDeviceContext(di=block(bits["discrete"]), co=block(bits["coil"]),
                               ir=block(regs["input"]), hr=block(regs["holding"]))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", required=True)
    ap.add_argument("--transport", choices=["tcp", "rtu-over-tcp", "serial"], default="tcp")
    ap.add_argument("--port", type=int, default=5020)
    ap.add_argument("--device")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--invalid", default="")
    ap.add_argument("--fill-gaps", type=int, default=0)
    ap.add_argument("--trace", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with open(a.profile, "rb") as f:
        profile = tomllib.load(f)
    invalid = [int(x, 0) for x in a.invalid.split(",") if x]
    context = ModbusServerContext(devices={a.unit: build(profile, invalid, a.fill_gaps)}, single=False)
    def trace(sending, pdu):
        if not sending:
            print(f"request fc={pdu.function_code} address={getattr(pdu, 'address', -1)} "
                  f"count={getattr(pdu, 'count', -1)}", flush=True)
        elif pdu.function_code & 0x80:
            print(f"exception fc={pdu.function_code}", flush=True)
        return pdu

    extra = {"trace_pdu": trace} if a.trace else {}
    print("ready", flush=True)
    if a.transport == "serial":
        await StartAsyncSerialServer(context=context, port=a.device, baudrate=a.baud,
                                     framer=FramerType.RTU, **extra)
    else:
        framer = FramerType.SOCKET if a.transport == "tcp" else FramerType.RTU
        await StartAsyncTcpServer(context=context, address=("127.0.0.1", a.port), framer=framer,
                                  **extra)


if __name__ == "__main__":
    asyncio.run(main())
