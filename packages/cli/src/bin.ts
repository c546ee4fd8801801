#!/usr/bin/env node
import { main } from "./cli.js";

// The exit code is set, not forced: stdout is flushed and open handles closed before Node exits.
process.exitCode = await main(process.argv.slice(2));
