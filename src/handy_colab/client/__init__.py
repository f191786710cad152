"""The laptop side: ssh config blocks, pinned known_hosts, IDE hints."""
