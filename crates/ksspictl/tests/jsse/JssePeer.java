// A JSSE (the JDK's TLS) peer for ksspictl's interop tests, compiled by the
// tests with javac. TLS 1.3 only, with a small key limit
// (jdk.tls.keyLimits, java.security) so that JSSE sends KeyUpdates while data
// flows; a JDK before JDK-8329548 sends one, update_requested, for every
// record it reads under keys past the limit until the peer's answer arrives.
//
//   java JssePeer client HOST PORT CA_PEM LIMIT BYTES
//     connect (the server's certificate must chain to CA_PEM and name
//     "localhost"), send BYTES bytes of a known pattern while reading the echo,
//     check the echo byte for byte; prints "echoed N bytes".
//   java JssePeer server CERT_PEM KEY_PEM LIMIT
//     listen on 127.0.0.1 (prints "listening on PORT"), accept one
//     connection and echo what it sends until it closes.
//
// Exit status 0 on success, 1 with a message on stderr otherwise.

import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Security;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;
import java.util.Collection;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public final class JssePeer {
    private static final String[] TLS13 = {"TLSv1.3"};

    public static void main(String[] args) throws Exception {
        try {
            if (args.length == 6 && args[0].equals("client")) {
                limit(args[4]);
                client(args[1], Integer.parseInt(args[2]), Path.of(args[3]),
                        Long.parseLong(args[5]));
            } else if (args.length == 4 && args[0].equals("server")) {
                limit(args[3]);
                server(Path.of(args[1]), Path.of(args[2]));
            } else {
                System.err.println("usage: JssePeer client HOST PORT CA LIMIT BYTES"
                        + " | JssePeer server CERT KEY LIMIT");
                System.exit(2);
            }
        } catch (Exception e) {
            System.err.println("JssePeer: " + e);
            System.exit(1);
        }
    }

    /** Update the keys after LIMIT bytes (an expression such as 2^14). */
    private static void limit(String limit) {
        Security.setProperty("jdk.tls.keyLimits", "AES/GCM/NoPadding KeyUpdate " + limit
                + ", ChaCha20-Poly1305 KeyUpdate " + limit);
    }

    /** The byte at offset i of the pattern the client sends. */
    private static byte pattern(long i) {
        return (byte) ('a' + (i * 7 + i / 253) % 26);
    }

    private static void client(String host, int port, Path ca, long bytes) throws Exception {
        KeyStore roots = KeyStore.getInstance("PKCS12");
        roots.load(null, null);
        roots.setCertificateEntry("ca", certificates(ca)[0]);
        TrustManagerFactory tmf =
                TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(roots);
        SSLContext ctx = SSLContext.getInstance("TLSv1.3");
        ctx.init(null, tmf.getTrustManagers(), null);
        try (SSLSocket sock = (SSLSocket) ctx.getSocketFactory().createSocket(host, port)) {
            sock.setEnabledProtocols(TLS13);
            SSLParameters params = sock.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS");
            params.setServerNames(java.util.List.of(new javax.net.ssl.SNIHostName("localhost")));
            sock.setSSLParameters(params);
            sock.startHandshake();
            Exception[] failed = new Exception[1];
            Thread writer = new Thread(() -> {
                try {
                    OutputStream out = sock.getOutputStream();
                    byte[] chunk = new byte[16384];
                    for (long sent = 0; sent < bytes; ) {
                        int n = (int) Math.min(chunk.length, bytes - sent);
                        for (int i = 0; i < n; i++) {
                            chunk[i] = pattern(sent + i);
                        }
                        out.write(chunk, 0, n);
                        sent += n;
                    }
                    out.flush();
                } catch (Exception e) {
                    failed[0] = e;
                }
            });
            writer.start();
            InputStream in = sock.getInputStream();
            byte[] buf = new byte[65536];
            long got = 0;
            while (got < bytes) {
                int n = in.read(buf);
                if (n < 0) {
                    throw new IllegalStateException("the server closed after " + got + " bytes");
                }
                for (int i = 0; i < n; i++) {
                    if (buf[i] != pattern(got + i)) {
                        throw new IllegalStateException("the echo differs at byte " + (got + i));
                    }
                }
                got += n;
            }
            writer.join();
            if (failed[0] != null) {
                throw failed[0];
            }
            System.out.println("echoed " + got + " bytes");
        }
    }

    private static void server(Path cert, Path key) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        char[] none = new char[0];
        ks.setKeyEntry("leaf", privateKey(key), none, certificates(cert));
        KeyManagerFactory kmf =
                KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, none);
        SSLContext ctx = SSLContext.getInstance("TLSv1.3");
        ctx.init(kmf.getKeyManagers(), null, null);
        try (SSLServerSocket listener = (SSLServerSocket) ctx.getServerSocketFactory()
                .createServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            listener.setEnabledProtocols(TLS13);
            System.out.println("listening on " + listener.getLocalPort());
            System.out.flush();
            try (SSLSocket sock = (SSLSocket) listener.accept()) {
                InputStream in = sock.getInputStream();
                OutputStream out = sock.getOutputStream();
                byte[] buf = new byte[65536];
                long echoed = 0;
                for (int n; (n = in.read(buf)) >= 0; ) {
                    out.write(buf, 0, n);
                    out.flush();
                    echoed += n;
                }
                System.out.println("echoed " + echoed + " bytes");
            }
        }
    }

    private static Certificate[] certificates(Path pem) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        Collection<? extends Certificate> certs =
                cf.generateCertificates(new ByteArrayInputStream(Files.readAllBytes(pem)));
        if (certs.isEmpty()) {
            throw new IllegalArgumentException(pem + ": no certificate");
        }
        return certs.toArray(new Certificate[0]);
    }

    /** A PKCS #8 PEM private key ("BEGIN PRIVATE KEY"), EC or RSA. */
    private static PrivateKey privateKey(Path pem) throws Exception {
        String text = Files.readString(pem, StandardCharsets.US_ASCII);
        String body = text.replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(Base64.getDecoder().decode(body));
        try {
            return KeyFactory.getInstance("EC").generatePrivate(spec);
        } catch (java.security.spec.InvalidKeySpecException notEc) {
            return KeyFactory.getInstance("RSA").generatePrivate(spec);
        }
    }
}
