"""What a private Docker engine added to iptables, as an ``iptables-restore --noflush`` script that
removes it (used by scripts/private-dockerd.sh).

    python3 scripts/iptables-undo.py BEFORE AFTER --bridge NAME --pool CIDR > undo
    iptables-restore --noflush < undo

BEFORE and AFTER are ``iptables-save`` outputs from before the engine started and after it stopped.
A rule counts as the engine's when it is in AFTER and not in BEFORE (counting duplicates) and it
names a Docker chain, the engine's default bridge, a bridge of its own networks (``br-<id>``) or
an address in its pool; anything else added meanwhile (by another program) is left alone. Chains
that AFTER has and BEFORE had not are flushed and deleted once nothing jumps to them, and a
built-in chain's policy that changed (Docker sets FORWARD to DROP) is set back.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}


@dataclass
class Table:
    chains: dict[str, str] = field(default_factory=dict)  # name -> policy ("-" for user chains)
    rules: list[str] = field(default_factory=list)  # "-A CHAIN ..." as iptables-save wrote it


def parse(text: str) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    current: Table | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), Table())
        elif current is None or line.startswith(("#", "COMMIT")) or not line.strip():
            continue
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            current.chains[name] = policy
        elif line.startswith("-A "):
            current.rules.append(line)
    return tables


def is_engines(rule: str, bridge: str, pool: ipaddress.IPv4Network) -> bool:
    words = shlex.split(rule)
    if any(w.startswith("DOCKER") for w in words):
        return True
    if any(w == bridge or re.fullmatch(r"br-[0-9a-f]{12}", w) for w in words):
        return True
    for word in words:
        try:
            if ipaddress.ip_network(word, strict=False).overlaps(pool):
                return True
        except ValueError:
            continue
    return False


def undo(before: dict[str, Table], after: dict[str, Table], bridge: str, pool: str) -> str:
    network = ipaddress.IPv4Network(pool, strict=False)
    out: list[str] = []
    for name, now in after.items():
        then = before.get(name, Table())
        seen = Counter(then.rules)
        added: list[str] = []
        for rule in now.rules:
            if seen[rule]:
                seen[rule] -= 1
            elif is_engines(rule, bridge, network):
                added.append(rule)
        new_chains = [c for c in now.chains if c not in then.chains and c.startswith("DOCKER")]
        # A table iptables had not loaded before had its built-in chains at ACCEPT.
        policies = [
            (c, then.chains.get(c, "ACCEPT"))
            for c in now.chains
            if c in BUILTIN and now.chains[c] != then.chains.get(c, "ACCEPT")
        ]
        if not (added or new_chains or policies):
            continue
        out.append(f"*{name}")
        out.extend(f":{chain} {policy} [0:0]" for chain, policy in policies)
        # Rules in chains about to be deleted go with their chain's flush.
        out.extend("-D " + r[3:] for r in reversed(added) if r.split()[1] not in new_chains)
        out.extend(f"-F {chain}" for chain in new_chains)
        out.extend(f"-X {chain}" for chain in new_chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--bridge", required=True)
    parser.add_argument("--pool", required=True)
    args = parser.parse_args(argv)
    sys.stdout.write(
        undo(
            parse(args.before.read_text(encoding="utf-8")),
            parse(args.after.read_text(encoding="utf-8")),
            args.bridge,
            args.pool,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
