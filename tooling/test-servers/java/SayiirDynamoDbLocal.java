// Starts AWS DynamoDB Local 3.x bound to one host only (127.0.0.1 by default).
//
// DynamoDB Local's own command line has no bind-address option: its ServerRunner builds a Jetty
// server listening on every interface. We let ServerRunner build it from the usual flags, then set
// the host on its Jetty connector before starting it. Prints one "SAYIIR-READY" line when serving.
//
// Usage: java -Djava.library.path=<dir with libsqlite4java-linux-amd64.so> -cp <classes>:<lib>/*
//             SayiirDynamoDbLocal <host> <port>
import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public final class SayiirDynamoDbLocal {
  private SayiirDynamoDbLocal() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: SayiirDynamoDbLocal <host> <port>");
      System.exit(2);
    }
    String host = args[0];
    String port = args[1];
    // -sharedDb: one database whatever the credentials/region, so every client sees the same tables.
    // -disableTelemetry: no outbound calls from a test server.
    DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(
        new String[] {"-inMemory", "-sharedDb", "-disableTelemetry", "-port", port});
    Field field = DynamoDBProxyServer.class.getDeclaredField("server");
    field.setAccessible(true);
    Server jetty = (Server) field.get(proxy);
    int bound = 0;
    for (Connector connector : jetty.getConnectors()) {
      if (connector instanceof ServerConnector serverConnector) {
        serverConnector.setHost(host);
        bound++;
      }
    }
    if (bound == 0) {
      throw new IllegalStateException("DynamoDB Local has no Jetty ServerConnector to bind to " + host);
    }
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        proxy.stop();
      } catch (Exception ignored) {
        // exiting anyway
      }
    }));
    proxy.start();
    System.out.println("SAYIIR-READY dynamodb-local " + host + ":" + port);
    System.out.flush();
    proxy.join();
  }
}
