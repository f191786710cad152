"""SSH servers the runtime can run: for now a dedicated OpenSSH sshd."""
