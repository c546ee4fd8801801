import { runConformanceOn } from "@sayiir/persistence-core/conformance";
import { conformanceTargets, NO_SERVER } from "./subject.js";

runConformanceOn(conformanceTargets(), NO_SERVER);
