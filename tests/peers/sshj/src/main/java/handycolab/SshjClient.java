package handycolab;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import net.schmizz.sshj.DefaultConfig;
import net.schmizz.sshj.SSHClient;
import net.schmizz.sshj.common.Factory;
import net.schmizz.sshj.common.IOUtils;
import net.schmizz.sshj.connection.channel.direct.Session;
import net.schmizz.sshj.connection.channel.forwarded.RemotePortForwarder;
import net.schmizz.sshj.connection.channel.forwarded.SocketForwardingConnectListener;
import net.schmizz.sshj.sftp.FileMode;
import net.schmizz.sshj.sftp.SFTPClient;
import net.schmizz.sshj.transport.NegotiatedAlgorithms;
import net.schmizz.sshj.transport.verification.OpenSSHKnownHosts;
import net.schmizz.sshj.userauth.UserAuthException;
import net.schmizz.sshj.userauth.keyprovider.KeyProvider;

/**
 * What PyCharm's SSH interpreter does with sshj, step by step, against one host: verify the
 * host key from a known_hosts file (looked up as [host]:port, sshj has no HostKeyAlias),
 * log in with a key file, upload a helpers tree over SFTP, run the remote python, and open a
 * remote forward on localhost port 0 (the debugger's) that the runtime connects back through.
 * sshj's DefaultConfig is used untouched, so what is negotiated is what sshj picks by itself.
 *
 * Prints one JSON line. Exit codes: 0 all steps passed, 2 usage, 3 host key unknown,
 * 4 host key changed, 5 authentication refused, 6 SFTP, 7 exec, 8 remote forward,
 * 1 anything else (connection refused, timeout, ...).
 */
public final class SshjClient {
    static final int UNKNOWN_KEY = 3, CHANGED_KEY = 4, AUTH = 5, SFTP = 6, EXEC = 7, FORWARD = 8;

    /** sshj's own known_hosts check; it only remembers why it refused, and still refuses. */
    static final class RecordingKnownHosts extends OpenSSHKnownHosts {
        String outcome = "not checked";

        RecordingKnownHosts(File file) throws IOException {
            super(file);
        }

        @Override
        public boolean verify(String hostname, int port, PublicKey key) {
            boolean ok = super.verify(hostname, port, key);
            if (ok) {
                outcome = "verified";
            }
            return ok;
        }

        @Override
        protected boolean hostKeyUnverifiableAction(String hostname, PublicKey key) {
            outcome = "unknown";
            return false;
        }

        @Override
        protected boolean hostKeyChangedAction(String hostname, PublicKey key) {
            outcome = "changed";
            return false;
        }
    }

    /** A step failed: its exit code and the result fields gathered so far. */
    static final class StepFailed extends Exception {
        final int code;

        StepFailed(int code, String message, Throwable cause) {
            super(message, cause);
            this.code = code;
        }
    }

    private final Map<String, String> opts;
    private final Map<String, Object> result = new LinkedHashMap<>();
    private final long timeoutMs;

    SshjClient(Map<String, String> opts) {
        this.opts = opts;
        this.timeoutMs = (long) (Double.parseDouble(opts.getOrDefault("timeout", "30")) * 1000);
    }

    public static void main(String[] argv) {
        // Before the first logger exists: only warnings, and to stderr (stdout is the JSON).
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--")) {
                usage("unexpected argument " + argv[i]);
            }
            String name = argv[i].substring(2);
            if (name.equals("list-algorithms") || name.equals("version")) {
                opts.put(name, "");
            } else if (i + 1 < argv.length) {
                opts.put(name, argv[++i]);
            } else {
                usage("--" + name + " needs a value");
            }
        }
        if (opts.containsKey("version")) {
            System.out.println(sshjVersion());
            return;
        }
        if (opts.containsKey("list-algorithms")) {
            System.out.println(Json.write(defaultAlgorithms()));
            return;
        }
        for (String req : List.of("host", "port", "user", "key", "known-hosts")) {
            if (!opts.containsKey(req)) {
                usage("--" + req + " is required");
            }
        }
        System.exit(new SshjClient(opts).run());
    }

    static void usage(String problem) {
        System.err.println("sshj-client: " + problem);
        System.err.println("usage: --host H --port P --user U --key FILE --known-hosts FILE"
                + " [--helpers DIR --remote-dir DIR] [--python PATH] [--remote-folder DIR]"
                + " [--forward yes] [--timeout SECONDS] | --list-algorithms | --version");
        System.exit(2);
    }

    static String sshjVersion() {
        Properties p = new Properties();
        try (InputStream in = SshjClient.class.getResourceAsStream("/sshj-client.properties")) {
            p.load(in);
        } catch (IOException | NullPointerException e) {
            return "unknown";
        }
        return p.getProperty("sshj.version", "unknown");
    }

    /** The algorithm names sshj's DefaultConfig offers, in its order of preference. */
    static Map<String, Object> defaultAlgorithms() {
        DefaultConfig cfg = new DefaultConfig();
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("sshj", sshjVersion());
        out.put("kex", names(cfg.getKeyExchangeFactories()));
        out.put("hostkey", names(cfg.getKeyAlgorithms()));
        out.put("cipher", names(cfg.getCipherFactories()));
        out.put("mac", names(cfg.getMACFactories()));
        return out;
    }

    static <T> List<String> names(List<Factory.Named<T>> factories) {
        List<String> names = new ArrayList<>();
        for (Factory.Named<T> f : factories) {
            names.add(f.getName());
        }
        return names;
    }

    int run() {
        result.put("sshj", sshjVersion());
        int code = 0;
        try {
            steps();
        } catch (StepFailed e) {
            code = e.code;
            result.put("error", e.getMessage()
                    + (e.getCause() != null ? ": " + e.getCause() : ""));
        }
        result.put("exit", code);
        System.out.println(Json.write(result));
        return code;
    }

    private void steps() throws StepFailed {
        String host = opts.get("host");
        int port = Integer.parseInt(opts.get("port"));
        RecordingKnownHosts knownHosts;
        try {
            knownHosts = new RecordingKnownHosts(new File(opts.get("known-hosts")));
        } catch (IOException e) {
            throw new StepFailed(1, "cannot read the known_hosts file", e);
        }
        try (SSHClient ssh = new SSHClient(new DefaultConfig())) {
            ssh.addHostKeyVerifier(knownHosts);
            ssh.addAlgorithmsVerifier(algs -> {
                result.put("negotiated", negotiated(algs));
                return true;
            });
            ssh.setConnectTimeout((int) timeoutMs);
            ssh.setTimeout((int) timeoutMs);
            try {
                ssh.connect(host, port);
            } catch (IOException e) {
                result.put("host_key", knownHosts.outcome);
                if (knownHosts.outcome.equals("unknown")) {
                    throw new StepFailed(UNKNOWN_KEY, "host key not in known_hosts for "
                            + hostPattern(host, port), e);
                }
                if (knownHosts.outcome.equals("changed")) {
                    throw new StepFailed(CHANGED_KEY, "host key does not match known_hosts for "
                            + hostPattern(host, port), e);
                }
                throw new StepFailed(1, "connect to " + host + ":" + port + " failed", e);
            }
            result.put("host_key", knownHosts.outcome);
            result.put("server_version", ssh.getTransport().getServerVersion());
            try {
                KeyProvider key = ssh.loadKeys(opts.get("key"));
                result.put("key_type", key.getType().toString());
                ssh.authPublickey(opts.get("user"), key);
            } catch (UserAuthException e) {
                throw new StepFailed(AUTH, "publickey authentication refused", e);
            } catch (IOException e) {
                throw new StepFailed(AUTH, "cannot load the key file", e);
            }
            result.put("auth", "publickey");
            if (opts.containsKey("helpers")) {
                upload(ssh, Path.of(opts.get("helpers")), opts.get("remote-dir"));
            }
            if (opts.containsKey("python")) {
                String py = shellQuote(opts.get("python"));
                result.put("exec", exec(ssh, py + " -c 'import sys; print(sys.executable)'"));
            }
            if (opts.getOrDefault("forward", "no").equals("yes")) {
                remoteForward(ssh);
            }
            ssh.disconnect();
        } catch (IOException e) {
            throw new StepFailed(1, "session failed", e);
        }
    }

    static String hostPattern(String host, int port) {
        return port == 22 ? host : "[" + host + "]:" + port;
    }

    static Map<String, Object> negotiated(NegotiatedAlgorithms a) {
        Map<String, Object> n = new LinkedHashMap<>();
        n.put("kex", a.getKeyExchangeAlgorithm());
        n.put("hostkey", a.getSignatureAlgorithm());
        n.put("cipher", a.getClient2ServerCipherAlgorithm());
        n.put("cipher_s2c", a.getServer2ClientCipherAlgorithm());
        n.put("mac", a.getClient2ServerMACAlgorithm());
        n.put("mac_s2c", a.getServer2ClientMACAlgorithm());
        return n;
    }

    /** The helpers tree, file by file as an IDE deploys it; every size checked by a stat. */
    private void upload(SSHClient ssh, Path local, String remote) throws StepFailed {
        if (remote == null) {
            throw new StepFailed(2, "--helpers needs --remote-dir", null);
        }
        Map<String, Object> sftpResult = new LinkedHashMap<>();
        result.put("sftp", sftpResult);
        List<String> mismatched = new ArrayList<>();
        long bytes = 0;
        int files = 0;
        try (SFTPClient sftp = ssh.newSFTPClient(); Stream<Path> walk = Files.walk(local)) {
            sftp.mkdirs(remote);
            for (Path p : (Iterable<Path>) walk.sorted()::iterator) {
                String rel = local.relativize(p).toString().replace(File.separatorChar, '/');
                if (rel.isEmpty()) {
                    continue;
                }
                String target = remote + "/" + rel;
                if (Files.isDirectory(p)) {
                    sftp.mkdirs(target);
                    continue;
                }
                sftp.put(p.toString(), target);
                long want = Files.size(p);
                long got = sftp.size(target);
                if (got != want) {
                    mismatched.add(rel + ": " + got + " != " + want);
                }
                files++;
                bytes += want;
            }
            if (opts.containsKey("remote-folder")) {
                sftpResult.put("remote_folder_is_dir",
                        sftp.stat(opts.get("remote-folder")).getType() == FileMode.Type.DIRECTORY);
            }
        } catch (IOException e) {
            throw new StepFailed(SFTP, "SFTP upload failed", e);
        }
        sftpResult.put("files", files);
        sftpResult.put("bytes", bytes);
        sftpResult.put("mismatched", mismatched);
        if (!mismatched.isEmpty()) {
            throw new StepFailed(SFTP, "uploaded sizes differ", null);
        }
    }

    private Map<String, Object> exec(SSHClient ssh, String command) throws StepFailed {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Session session = ssh.startSession()) {
            Session.Command cmd = session.exec(command);
            out.put("stdout", IOUtils.readFully(cmd.getInputStream()).toString(StandardCharsets.UTF_8));
            out.put("stderr", IOUtils.readFully(cmd.getErrorStream()).toString(StandardCharsets.UTF_8));
            cmd.join(timeoutMs, TimeUnit.MILLISECONDS);
            out.put("exit_status", cmd.getExitStatus());
        } catch (IOException e) {
            throw new StepFailed(EXEC, "exec of `" + command + "` failed", e);
        }
        Object status = out.get("exit_status");
        if (status == null || (Integer) status != 0) {
            result.put("exec_failed", out);
            throw new StepFailed(EXEC, "`" + command + "` exited with " + status, null);
        }
        return out;
    }

    /**
     * The debugger's link: a remote forward on "localhost", port 0, to a listener here. The
     * runtime then connects to the port it was given, once to 127.0.0.1 and once by the name
     * localhost; each connection must carry a token to this listener and its answer back.
     */
    private void remoteForward(SSHClient ssh) throws StepFailed {
        Map<String, Object> fwdResult = new LinkedHashMap<>();
        result.put("remote_forward", fwdResult);
        byte[] nonce = new byte[8];
        new SecureRandom().nextBytes(nonce);
        String token = HexFormat.of().formatHex(nonce);
        List<String> received = new ArrayList<>();
        try (ServerSocket listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress())) {
            listener.setSoTimeout((int) timeoutMs);
            RemotePortForwarder rpf = ssh.getRemotePortForwarder();
            RemotePortForwarder.Forward fwd;
            try {
                fwd = rpf.bind(new RemotePortForwarder.Forward("localhost", 0),
                        new SocketForwardingConnectListener(
                                new InetSocketAddress(listener.getInetAddress(), listener.getLocalPort())));
            } catch (IOException e) {
                throw new StepFailed(FORWARD, "tcpip-forward localhost:0 refused", e);
            }
            fwdResult.put("port", fwd.getPort());
            Thread acceptor = new Thread(() -> answer(listener, token, received), "acceptor");
            acceptor.setDaemon(true);
            acceptor.start();
            String py = shellQuote(opts.getOrDefault("python", "python3"));
            String code = "import socket\n"
                    + "for h in (\"127.0.0.1\", \"localhost\"):\n"
                    + "    s = socket.create_connection((h, " + fwd.getPort() + "), 10)\n"
                    + "    s.sendall(b\"" + token + " \" + h.encode() + b\"\\n\")\n"
                    + "    print(h, s.makefile().readline().strip())\n"
                    + "    s.close()\n";
            Map<String, Object> ran = exec(ssh, py + " -c " + shellQuote(code));
            acceptor.join(timeoutMs);
            fwdResult.put("runtime_saw", ran.get("stdout"));
            fwdResult.put("received", received);
            rpf.cancel(fwd);
        } catch (IOException e) {
            throw new StepFailed(FORWARD, "remote forward failed", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new StepFailed(FORWARD, "interrupted", e);
        }
        String want = "127.0.0.1 ack " + token + " 127.0.0.1\nlocalhost ack " + token + " localhost\n";
        boolean ok = want.equals(fwdResult.get("runtime_saw")) && received.size() == 2;
        fwdResult.put("ok", ok);
        if (!ok) {
            throw new StepFailed(FORWARD, "bytes did not make the round trip", null);
        }
    }

    /** Accept the runtime's two connections; answer each line that carries the token. */
    private static void answer(ServerSocket listener, String token, List<String> received) {
        for (int i = 0; i < 2; i++) {
            try (Socket s = listener.accept()) {
                BufferedReader in = new BufferedReader(
                        new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
                String line = in.readLine();
                if (line == null || !line.startsWith(token + " ")) {
                    return;
                }
                synchronized (received) {
                    received.add(line);
                }
                OutputStream out = s.getOutputStream();
                out.write(("ack " + line + "\n").getBytes(StandardCharsets.UTF_8));
                out.flush();
            } catch (IOException e) {
                return;
            }
        }
    }

    static String shellQuote(String s) {
        return "'" + s.replace("'", "'\\''") + "'";
    }

    /** Just enough JSON for the result: maps, lists, strings, numbers, booleans, null. */
    static final class Json {
        static String write(Object v) {
            StringBuilder sb = new StringBuilder();
            write(sb, v);
            return sb.toString();
        }

        private static void write(StringBuilder sb, Object v) {
            if (v == null) {
                sb.append("null");
            } else if (v instanceof String s) {
                sb.append('"');
                for (char c : s.toCharArray()) {
                    switch (c) {
                        case '"' -> sb.append("\\\"");
                        case '\\' -> sb.append("\\\\");
                        case '\n' -> sb.append("\\n");
                        case '\r' -> sb.append("\\r");
                        case '\t' -> sb.append("\\t");
                        default -> {
                            if (c < 0x20) {
                                sb.append(String.format("\\u%04x", (int) c));
                            } else {
                                sb.append(c);
                            }
                        }
                    }
                }
                sb.append('"');
            } else if (v instanceof Number || v instanceof Boolean) {
                sb.append(v);
            } else if (v instanceof Map<?, ?> m) {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    if (!first) {
                        sb.append(',');
                    }
                    first = false;
                    write(sb, String.valueOf(e.getKey()));
                    sb.append(':');
                    write(sb, e.getValue());
                }
                sb.append('}');
            } else if (v instanceof List<?> l) {
                sb.append('[');
                for (int i = 0; i < l.size(); i++) {
                    if (i > 0) {
                        sb.append(',');
                    }
                    write(sb, l.get(i));
                }
                sb.append(']');
            } else {
                write(sb, v.toString());
            }
        }
    }
}
