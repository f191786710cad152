"""The SSH server a runtime runs on 127.0.0.1 behind its tunnel: two backends, one interface.

base.py is the interface (``Server``). openssh.py runs a dedicated OpenSSH sshd (what
``auto`` picks as root when sshd is installed); embedded.py runs the pure-Python asyncssh
server everywhere else (no root, no apt, no binaries), whose process is asyncssh_server.py
and the modules it names (the demo's relay runs that same server). backends.py decides which
one runs, and why. Both start every session through session.py's launcher, so a session gets
the notebook's environment and directory either way.
"""
