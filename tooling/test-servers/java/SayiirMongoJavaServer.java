// Starts mongo-java-server (in-memory backend) on one host and port: a MongoDB wire-compatible
// stand-in, not MongoDB. Prints one "SAYIIR-READY" line when serving.
//
// It claims MongoDB 5.0.0 with wire version 13. mongo-java-server's own MONGO_5_0 constant reports
// wire version 8 (MongoDB 4.2), which the Node.js driver 7 refuses (it needs 9, MongoDB 4.4, or
// newer). The version only feeds hello/buildInfo; nothing in mongo-java-server branches on it.
//
// The oplog is enabled, so the server answers `$changeStream` (MongoDB change streams) as a replica
// set does; without it mongo-java-server returns a change stream that is closed at once. Its oplog
// is an ordinary collection (local.oplog.rs) that keeps every write, full inserted documents
// included, and every getMore of a change stream scans it whole: entries older than OPLOG_KEEP
// are deleted every TRIM_EVERY, as a capped oplog would drop them, so memory and getMore cost stay
// bounded by the recent write rate (a stream resumed from a token older than that skips the gap
// instead of failing with ChangeStreamHistoryLost as MongoDB would).
//
// Usage: java -cp <classes>:<lib>/* SayiirMongoJavaServer <host> <port>
import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.oplog.NoopOplog;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

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

  private static final Duration OPLOG_KEEP = Duration.ofSeconds(60);
  private static final Duration TRIM_EVERY = Duration.ofSeconds(5);

  /** Deletes oplog entries older than OPLOG_KEEP (the collection's own lock serialises it). */
  private static void trimOplog(MemoryBackend backend) {
    try {
      MongoCollection<?> oplog = backend.resolveDatabase("local").resolveCollection("oplog.rs", false);
      if (oplog == null) return;
      Instant cutoff = Instant.now().minus(OPLOG_KEEP);
      oplog.deleteDocuments(new Document("wall", new Document("$lt", cutoff)), 0, NoopOplog.get());
    } catch (RuntimeException e) {
      System.err.println("oplog trim failed: " + e);
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: SayiirMongoJavaServer <host> <port>");
      System.exit(2);
    }
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    MemoryBackend backend = new MemoryBackend();
    backend.version(CLAIMED_VERSION);
    backend.enableOplog();
    ScheduledExecutorService trimmer = Executors.newSingleThreadScheduledExecutor(runnable -> {
      Thread thread = new Thread(runnable, "oplog-trim");
      thread.setDaemon(true);
      return thread;
    });
    long every = TRIM_EVERY.toMillis();
    trimmer.scheduleWithFixedDelay(() -> trimOplog(backend), every, every, TimeUnit.MILLISECONDS);
    MongoServer server = new MongoServer(backend);
    server.bind(host, port);
    Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
    System.out.println("SAYIIR-READY mongo-java-server " + host + ":" + port);
    System.out.flush();
    Thread.currentThread().join();
  }
}
