// Starts mongo-java-server (in-memory backend) on one host and port: a MongoDB wire-compatible
// stand-in, not MongoDB. Prints one "SAYIIR-READY" line when serving.
//
// It claims MongoDB 5.0.0 with wire version 13. mongo-java-server's own MONGO_5_0 constant reports
// wire version 8 (MongoDB 4.2), which the Node.js driver 7 refuses (it needs 9, MongoDB 4.4, or
// newer). The version only feeds hello/buildInfo; nothing in mongo-java-server branches on it.
//
// Usage: java -cp <classes>:<lib>/* SayiirMongoJavaServer <host> <port>
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.util.List;

public final class SayiirMongoJavaServer {
  private SayiirMongoJavaServer() {}

  private static final MongoVersion CLAIMED_VERSION = new MongoVersion() {
    @Override
    public List<Integer> getVersionArray() {
      return List.of(5, 0, 0);
    }

    @Override
    public int getWireVersion() {
      return 13;
    }
  };

  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: SayiirMongoJavaServer <host> <port>");
      System.exit(2);
    }
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    MongoServer server = new MongoServer(new MemoryBackend().version(CLAIMED_VERSION));
    server.bind(host, port);
    Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
    System.out.println("SAYIIR-READY mongo-java-server " + host + ":" + port);
    System.out.flush();
    Thread.currentThread().join();
  }
}
