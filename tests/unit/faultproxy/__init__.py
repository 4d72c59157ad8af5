"""Unit tests of bench.faultproxy.FaultProxy against a loopback echo server. No broker."""
