// Java-based local servers (DynamoDB Local, mongo-java-server): their Maven artefacts and our small
// launcher class, installed once into `<cache>/java/<id>/`:
//   pom.xml         generated, lists the artefacts
//   lib/            the jars (+ native libraries) from `mvn dependency:copy-dependencies`
//   native/         libsqlite4java under the name sqlite4java looks for (DynamoDB Local only)
//   classes/        our launcher, compiled with javac
//   installed.json  written last: what was installed, and the launcher's hash (a changed launcher
//                   source makes the setups ask for install.ts again instead of running stale code)
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { cacheDir, JAVA_SOURCE_DIR, type JavaServerSpec, type MavenArtifact } from "./config.ts";
import { findExecutable, run } from "./process.ts";

export interface JavaServerFiles {
  dir: string;
  classpath: string;
  nativeDir: string;
}

interface Marker {
  id: string;
  dependencies: MavenArtifact[];
  launcherSha256: string;
  installedAt: string;
}

export function javaServerDir(spec: JavaServerSpec): string {
  return join(cacheDir(), "java", spec.id);
}

function launcherHash(spec: JavaServerSpec): string {
  return createHash("sha256")
    .update(readFileSync(join(JAVA_SOURCE_DIR, spec.launcherSource)))
    .digest("hex");
}

export function javaExecutable(tool: "java" | "javac" = "java"): string | undefined {
  const home = process.env.JAVA_HOME;
  return findExecutable(tool, home ? [join(home, "bin")] : []);
}

/** The installed files, or why the server is not (yet) installed. Reads files only. */
export function javaServerStatus(spec: JavaServerSpec): { files: JavaServerFiles } | { missing: string } {
  if (!javaExecutable()) return { missing: "no `java` on PATH (Java 17+ is needed)" };
  const dir = javaServerDir(spec);
  const markerFile = join(dir, "installed.json");
  if (!existsSync(markerFile)) return { missing: `${spec.label} ${spec.version} is not installed in ${dir}` };
  const marker = JSON.parse(readFileSync(markerFile, "utf8")) as Marker;
  if (marker.launcherSha256 !== launcherHash(spec)) {
    return { missing: `the launcher ${spec.launcherSource} changed since it was compiled` };
  }
  return {
    files: {
      dir,
      classpath: `${join(dir, "classes")}:${join(dir, "lib", "*")}`,
      nativeDir: join(dir, "native"),
    },
  };
}

/** Idempotent: downloads the artefacts if missing and (re)compiles the launcher if its source changed. */
export async function installJavaServer(spec: JavaServerSpec): Promise<"cached" | "installed"> {
  const status = javaServerStatus(spec);
  if ("files" in status) return "cached";
  const java = javaExecutable("java");
  const javac = javaExecutable("javac");
  const mvn = findExecutable("mvn");
  if (!java || !javac || !mvn) {
    throw new Error(
      `${spec.label} needs java, javac and mvn on PATH (missing: ${[
        !java && "java",
        !javac && "javac",
        !mvn && "mvn",
      ]
        .filter(Boolean)
        .join(", ")}); on Debian: apt-get install openjdk-17-jdk-headless maven`,
    );
  }
  const dir = javaServerDir(spec);
  const lib = join(dir, "lib");
  mkdirSync(dir, { recursive: true });
  rmSync(join(dir, "installed.json"), { force: true });

  const wanted = spec.dependencies.map((d) => `${d.artifactId}-${d.version}.jar`);
  if (!wanted.every((jar) => existsSync(join(lib, jar)))) {
    writeFileSync(join(dir, "pom.xml"), pom(spec));
    await run(
      mvn,
      [
        "-B",
        "-q",
        "-f",
        join(dir, "pom.xml"),
        "dependency:copy-dependencies",
        `-DoutputDirectory=${lib}`,
        "-DincludeScope=runtime",
      ],
      { timeoutMs: 15 * 60_000 },
    );
  }

  // sqlite4java (DynamoDB Local's storage) loads "libsqlite4java-linux-amd64.so" from java.library.path;
  // Maven names the file with its version, so copy it under the expected name.
  const nativeDir = join(dir, "native");
  mkdirSync(nativeDir, { recursive: true });
  for (const file of readdirSync(lib)) {
    const m = /^(libsqlite4java-linux-[a-z0-9_]+)-[\d.]+\.so$/.exec(file);
    if (m) copyFileSync(join(lib, file), join(nativeDir, `${m[1]}.so`));
  }

  const classes = join(dir, "classes");
  rmSync(classes, { recursive: true, force: true });
  mkdirSync(classes, { recursive: true });
  await run(
    javac,
    ["-nowarn", "-d", classes, "-cp", join(lib, "*"), join(JAVA_SOURCE_DIR, spec.launcherSource)],
    { timeoutMs: 120_000 },
  );

  const marker: Marker = {
    id: spec.id,
    dependencies: spec.dependencies,
    launcherSha256: launcherHash(spec),
    installedAt: new Date().toISOString(),
  };
  writeFileSync(join(dir, "installed.json"), `${JSON.stringify(marker, null, 2)}\n`);
  return "installed";
}

function pom(spec: JavaServerSpec): string {
  const deps = spec.dependencies
    .map(
      (d) =>
        `    <dependency><groupId>${d.groupId}</groupId><artifactId>${d.artifactId}</artifactId>` +
        `<version>${d.version}</version>${d.type ? `<type>${d.type}</type>` : ""}</dependency>`,
    )
    .join("\n");
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by tooling/test-servers (install.ts): the artefacts of ${spec.label} ${spec.version}. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.sayiir.test-servers</groupId>
  <artifactId>${spec.id}</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
${deps}
  </dependencies>
</project>
`;
}
