// The registry: per backend name, create a migrated storage with a first client (a Subject), or
// open another client of a described storage in any process. Adapters are imported on first use
// (a tool never loads a driver it does not use); one that does not load is reported as
// BackendUnavailable with the reason, never skipped silently.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { isMigratable } from "@sayiir/persistence-core/adapter";
import { type AdapterClass, type Driver, definedOptions, freshName, mergeOptions } from "./driver.ts";
import { dynamodb } from "./drivers/dynamodb.ts";
import { memory } from "./drivers/memory.ts";
import { mongo } from "./drivers/mongo.ts";
import { postgres } from "./drivers/postgres.ts";
import { redis } from "./drivers/redis.ts";
import { redisCluster } from "./drivers/redis-cluster.ts";
import { sqlite } from "./drivers/sqlite.ts";
import { BACKEND_NAMES, REDIS_CLUSTER, type TargetName } from "./names.ts";
import type {
  BackendEntry,
  ClientOptions,
  CreateOptions,
  Registry,
  RegistryProfile,
  StoreConfig,
  Subject,
} from "./types.ts";
import type { ServerUrls } from "./urls.ts";

/** This backend cannot run here (no server, adapter not built): the message says why. */
export class BackendUnavailable extends Error {
  override name = "BackendUnavailable";
}

const DRIVERS: Readonly<Record<TargetName, Driver>> = {
  memory,
  sqlite,
  redis,
  postgres,
  mongo,
  dynamodb,
  [REDIS_CLUSTER]: redisCluster,
};

/** The registry as one tool uses it (see RegistryProfile). */
export function createRegistry(profile: RegistryProfile = {}): Registry {
  const tool = new Tool(profile);
  const names: readonly TargetName[] = [...BACKEND_NAMES, REDIS_CLUSTER];
  const entries = names.map((name): [TargetName, BackendEntry] => {
    const driver = DRIVERS[name];
    return [
      name,
      {
        name,
        server: driver.server,
        available: async (urls) => {
          serverUrl(driver, urls);
          await tool.load(driver);
        },
        create: (urls, options) => tool.create(driver, urls, options),
        open: (config, options) => tool.open(driver, config, options),
      },
    ];
  });
  return Object.freeze(Object.fromEntries(entries) as Record<TargetName, BackendEntry>);
}

/** One tool's use of the drivers: its profile, and the migrations it ran in this process. */
class Tool {
  readonly #profile: RegistryProfile;
  readonly #migrations = new Map<string, Promise<void>>();

  constructor(profile: RegistryProfile) {
    this.#profile = profile;
  }

  async create(driver: Driver, urls: ServerUrls, options: CreateOptions = {}): Promise<Subject> {
    const url = serverUrl(driver, urls);
    const Adapter = await this.load(driver);
    const { storage, tag, throwAwayServer, ...own } = options;
    const base: ClientOptions = { ...definedOptions(this.#profile.client), ...definedOptions(own) };
    if (driver.subject) return driver.subject(Adapter, base);
    const fresh = freshName(this.#profile.prefix ?? "sayiir", tag);
    const config = await driver.place({ url, storage, fresh, profile: this.#profile });
    const open = (o: ClientOptions = {}) => {
      const via = o.direct ? undefined : (o.via ?? base.via);
      return this.#construct(driver, Adapter, config, { ...base, ...definedOptions(o), via });
    };
    await this.#migrate(driver, Adapter, config);
    const backend = open();
    const { corrupt } = driver;
    return {
      name: driver.name,
      backend,
      storage: config.storage,
      config,
      connect: async (o) => open(o),
      ...(corrupt ? { corrupt: (id: string) => corrupt(config, id, backend) } : {}),
      cleanup: async () => {
        if (storage !== undefined) return;
        const direct = () => this.#construct(driver, Adapter, config, this.#defaults());
        await driver.drop(config, { open: direct, throwAwayServer: throwAwayServer === true });
      },
    };
  }

  async open(driver: Driver, config: StoreConfig, options: ClientOptions = {}): Promise<PersistentBackend> {
    if (driver.subject)
      throw new Error(`the ${driver.name} store lives in one process: use create() and connect()`);
    const Adapter = await this.load(driver);
    const via = options.direct ? undefined : options.via;
    return this.#construct(driver, Adapter, config, { ...this.#defaults(), ...definedOptions(options), via });
  }

  /** The profile's client defaults: what migrations and cleanups use (no proxy, no short timeouts). */
  #defaults(): ClientOptions {
    return definedOptions(this.#profile.client);
  }

  #construct(driver: Driver, Adapter: AdapterClass, config: StoreConfig, client: ClientOptions) {
    const tuned = this.#profile.tune?.(driver.name, client);
    return new Adapter(mergeOptions(driver.options(config, client), tuned));
  }

  /** migrate() where the adapter has one (isMigratable), on a client straight to the server. */
  async #migrate(driver: Driver, Adapter: AdapterClass, config: StoreConfig): Promise<void> {
    const run = async (target: StoreConfig) => {
      const migrator = this.#construct(driver, Adapter, target, this.#defaults());
      try {
        if (isMigratable(migrator)) await migrator.migrate();
      } finally {
        await migrator.close();
      }
    };
    const shared = driver.migration?.(config);
    if (shared === undefined) return run(config);
    let done = this.#migrations.get(shared.key);
    if (done === undefined) {
      done = run(shared.config);
      this.#migrations.set(shared.key, done);
    }
    await done;
  }

  /** The adapter's class: from the profile's module loader, else its package. */
  async load(driver: Driver): Promise<AdapterClass> {
    const load = this.#profile.modules?.[driver.name] ?? (() => import(driver.specifier));
    let module: Record<string, unknown>;
    try {
      module = (await load()) as Record<string, unknown>;
    } catch (error) {
      const reason = (error instanceof Error ? error.message : String(error)).split("\n")[0];
      throw new BackendUnavailable(
        `${driver.specifier} does not load (not built yet? \`pnpm turbo run build\`): ${reason}`,
      );
    }
    const Adapter = module[driver.className];
    if (typeof Adapter !== "function") {
      throw new BackendUnavailable(`${driver.specifier} exports no ${driver.className}`);
    }
    return Adapter as AdapterClass;
  }
}

/** The URL of the driver's server (null without one); BackendUnavailable when it is missing. */
function serverUrl(driver: Driver, urls: ServerUrls): string | null {
  if (driver.server === null) return null;
  const url = urls[driver.server];
  if (!url) throw new BackendUnavailable(`no ${driver.server} server`);
  return url;
}
