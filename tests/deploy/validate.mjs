#!/usr/bin/env node
// Offline validation of deploy/ (no cluster, no container engine needed):
//  1. every YAML document under deploy/kubernetes/ against the Kubernetes OpenAPI schema of its
//     apiVersion/kind: kubernetes-models' validators (compiled from the official OpenAPI spec:
//     required fields, types, formats, enums) plus a strict walk over @kubernetes/client-node's
//     generated models (the same spec: every field name of every type), which rejects unknown
//     fields as `kubectl apply --validate=strict` would;
//  2. the project's rules: resources, probes on /healthz and /readyz, pinned images, the Indexed
//     Job's --shard, the HPA's target, the kustomizations' file lists, the drain timeout against
//     terminationGracePeriodSeconds, every $(VAR), Secret, ConfigMap and volume resolving, and
//     (given the biref binary) every flag being one that `biref <command> --help` lists;
//  3. deploy/Containerfile statically: pinned bases, stages, the portable build options, the
//     non-root USER, HEALTHCHECK, ENTRYPOINT, and the runtime packages against what the biref
//     binary links (readelf + dpkg), when the binary is there;
//  4. a self-test: broken copies of deploy/ (one defect each, in a temporary folder) must each be
//     rejected with the expected message, so the checks above are shown to be able to fail.
//
// usage: node tests/deploy/validate.mjs [--root REPO] [--biref PATH/TO/biref] [--no-self-test]
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const argOf = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const ROOT = path.resolve(argOf("--root", path.join(here, "..", "..")));
const BIREF = argOf("--biref", path.join(ROOT, "build", "biref"));
const SELF_TEST = !argv.includes("--no-self-test");

let yaml, k8s;
try {
  yaml = (await import("js-yaml")).default;
  k8s = await import("@kubernetes/client-node");
  await import("kubernetes-models/v1/ConfigMap");
} catch (e) {
  console.error(
    `deploy validation: the npm packages of tests/deploy are not installed (${e.code || e.message}): ` +
      "run scripts/install-test-npm-deps.sh (npm ci in tests/deploy)",
  );
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Helpers

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const BIREF_COMMANDS = new Set(["serve", "segment", "models", "info", "convert", "eval", "bench", "version"]);
// Secrets the operator makes by hand (never committed): deploy/README.md must say how.
const HAND_MADE_SECRETS = ["biref-tokens"];

function walkFiles(dir, pred) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walkFiles(p, pred));
    else if (pred(e.name)) out.push(p);
  }
  return out;
}

function podSpecOf(doc) {
  const s = doc.spec || {};
  if (["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"].includes(doc.kind)) return s.template?.spec;
  if (doc.kind === "CronJob") return s.jobTemplate?.spec?.template?.spec;
  if (doc.kind === "Pod") return s;
  return undefined;
}
const podLabelsOf = (doc) =>
  doc.kind === "CronJob" ? doc.spec?.jobTemplate?.spec?.template?.metadata?.labels : doc.spec?.template?.metadata?.labels;
const matches = (selector, labels) =>
  isObj(selector) && Object.keys(selector).length > 0 && isObj(labels) &&
  Object.entries(selector).every(([k, v]) => labels[k] === v);

// Flags of a command line: --name=value, --name value, -x value (a value never starts with '-').
function parseFlags(args) {
  const flags = new Map();
  for (let i = 1; i < args.length; i++) {
    const a = String(args[i]);
    if (!a.startsWith("-")) continue;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) flags.set(a.slice(0, eq), a.slice(eq + 1));
    else if (i + 1 < args.length && !String(args[i + 1]).startsWith("-")) flags.set(a, String(args[++i]));
    else flags.set(a, true);
  }
  return flags;
}

// Seconds of a preStop handler: exec ["sleep", N] (or sh -c "sleep N") or the sleep action.
function preStopSeconds(c) {
  const p = c.lifecycle?.preStop;
  if (!p) return 0;
  if (p.sleep?.seconds) return Number(p.sleep.seconds);
  const m = /(?:^|\s)sleep\s+(\d+)\b/.exec((p.exec?.command || []).join(" "));
  return m ? Number(m[1]) : 0;
}

let helpCache = new Map();
function knownFlags(command) {
  if (!fs.existsSync(BIREF)) return null;
  if (!helpCache.has(command)) {
    const text = execFileSync(BIREF, [command, "--help"], { encoding: "utf8" });
    const flags = new Set();
    for (const line of text.split("\n")) {
      const m = /^\s{2}((?:-{1,2}[A-Za-z][\w-]*,?)+)/.exec(line);
      if (m) for (const f of m[1].split(",")) if (f) flags.add(f);
    }
    helpCache.set(command, flags);
  }
  return helpCache.get(command);
}

// ---------------------------------------------------------------------------------------------
// Schema: kubernetes-models (required, types, formats) + strict field names (client-node models)

async function schemaErrors(doc) {
  const { apiVersion, kind } = doc;
  if (typeof apiVersion !== "string" || !/^([a-z0-9.-]+\/)?v\d+((alpha|beta)\d+)?$/.test(apiVersion) ||
      typeof kind !== "string" || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
    return [`apiVersion '${apiVersion}' / kind '${kind}' is malformed`];
  }
  let Model;
  try {
    Model = (await import(`kubernetes-models/${apiVersion}/${kind}`))[kind];
  } catch {
    return [`${apiVersion} ${kind}: no such kind in the Kubernetes API (kubernetes-models has no schema for it)`];
  }
  const errors = [];
  try {
    new Model(structuredClone(doc)).validate();
  } catch (e) {
    errors.push(`schema: ${e.message}`);
  }
  const version = apiVersion.split("/").pop();
  const cls = k8s[version[0].toUpperCase() + version.slice(1) + kind];
  if (!cls || typeof cls.getAttributeTypeMap !== "function") {
    errors.push(`${apiVersion} ${kind}: @kubernetes/client-node has no model for it, so unknown fields cannot be checked`);
  } else {
    strictFields(doc, cls.name, "", errors);
  }
  return errors;
}

function strictFields(value, type, where, errors) {
  if (value === null || value === undefined) return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => strictFields(v, m[1], `${where}[${i}]`, errors));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (isObj(value)) for (const [k, v] of Object.entries(value)) strictFields(v, m[1], `${where}.${k}`, errors);
    return;
  }
  const cls = k8s[type];
  if (!cls || typeof cls.getAttributeTypeMap !== "function" || !isObj(value)) return;  // a leaf
  const attrs = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a]));
  for (const [key, v] of Object.entries(value)) {
    const a = attrs.get(key);
    if (!a) {
      errors.push(`schema: unknown field '${where ? where.slice(1) + "." : ""}${key}' (${type} has: ${[...attrs.keys()].join(", ")})`);
    } else {
      strictFields(v, a.type, `${where}.${key}`, errors);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The manifests

const KUSTOMIZATION_KEYS = new Set([
  "apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix", "resources", "components",
  "images", "labels", "commonLabels", "commonAnnotations", "configMapGenerator", "secretGenerator",
  "generatorOptions", "patches", "replicas", "replacements", "buildMetadata", "openapi", "crds",
]);

async function checkManifests(dir, readme) {
  const errors = [];
  const docs = [];  // { file, doc, where }
  const files = walkFiles(dir, (n) => /\.ya?ml$/.test(n));
  if (files.length === 0) errors.push(`${dir}: no YAML files`);
  for (const file of files) {
    let parsed;
    try {
      parsed = yaml.loadAll(fs.readFileSync(file, "utf8"));
    } catch (e) {
      errors.push(`${path.relative(dir, file)}: YAML does not parse: ${e.message.split("\n")[0]}`);
      continue;
    }
    parsed.forEach((doc, i) => {
      if (doc === null || doc === undefined) return;
      const where = `${path.relative(dir, file)}#${i + 1} ${doc?.kind || "?"}/${doc?.metadata?.name || "?"}`;
      if (!isObj(doc)) errors.push(`${where}: not a mapping`);
      else docs.push({ file, doc, where });
    });
  }
  const err = (d, msg) => errors.push(`${d.where}: ${msg}`);
  const ofKind = (kind) => docs.filter((d) => d.doc.kind === kind);
  const named = (kind, name) => docs.find((d) => d.doc.kind === kind && d.doc.metadata?.name === name);
  const workloads = docs.filter((d) => podSpecOf(d.doc));

  // Kustomizations: their own (small) format, checked here; everything else against the schemas.
  const kustomized = new Set();
  for (const d of docs) {
    if (d.doc.kind !== "Kustomization") {
      for (const e of await schemaErrors(d.doc)) err(d, e);
      if (!d.doc.metadata?.name) err(d, "metadata.name is missing");
      continue;
    }
    if (d.doc.apiVersion !== "kustomize.config.k8s.io/v1beta1") err(d, `apiVersion must be kustomize.config.k8s.io/v1beta1`);
    for (const k of Object.keys(d.doc)) if (!KUSTOMIZATION_KEYS.has(k)) err(d, `unknown Kustomization field '${k}'`);
    const kdir = path.dirname(d.file);
    const listed = Array.isArray(d.doc.resources) ? d.doc.resources : [];
    if (!Array.isArray(d.doc.resources)) err(d, "resources must be a list");
    for (const r of listed) {
      const p = path.join(kdir, String(r));
      if (!fs.existsSync(p)) err(d, `resources lists '${r}', which does not exist`);
      kustomized.add(path.resolve(p));
    }
    for (const f of fs.readdirSync(kdir)) {
      if (/\.ya?ml$/.test(f) && f !== path.basename(d.file) && !listed.includes(f)) {
        err(d, `resources does not list ${f} (every manifest of ${path.relative(dir, kdir) || "."}/ must be in it)`);
      }
    }
    const docsHere = docs.filter((x) => kustomized.has(path.resolve(x.file)) && path.dirname(x.file) === kdir);
    for (const x of docsHere) {
      const ns = x.doc.metadata?.namespace;
      if (d.doc.namespace && ns && ns !== d.doc.namespace) err(x, `namespace ${ns} differs from the kustomization's ${d.doc.namespace}`);
    }
    for (const img of d.doc.images || []) {
      const used = docsHere.some((x) => [...(podSpecOf(x.doc)?.containers || []), ...(podSpecOf(x.doc)?.initContainers || [])]
        .some((c) => String(c.image).replace(/[@:][^/]*$/, "") === img.name));
      if (!used) err(d, `images names '${img.name}', which no container of its resources uses`);
      if (img.newTag === "latest") err(d, `images '${img.name}': newTag latest is not a pinned version`);
    }
  }
  for (const f of new Set(docs.map((d) => d.file))) {
    if (path.basename(f) !== "kustomization.yaml" && !kustomized.has(path.resolve(f))) {
      errors.push(`${path.relative(dir, f)}: no kustomization.yaml lists it`);
    }
  }

  // The environment of a container: ConfigMaps of envFrom (from any manifest) and env.
  const configData = (name) => named("ConfigMap", name)?.doc.data;
  const envOf = (d, c) => {
    const env = new Map();
    for (const src of c.envFrom || []) {
      if (src.configMapRef) {
        const data = configData(src.configMapRef.name);
        if (!data) err(d, `container ${c.name}: envFrom ConfigMap '${src.configMapRef.name}' is not among the manifests`);
        else for (const [k, v] of Object.entries(data)) env.set((src.prefix || "") + k, String(v));
      }
      if (src.secretRef) env.set(`<secret ${src.secretRef.name}>`, "");
    }
    for (const e of c.env || []) {
      if (e.valueFrom?.configMapKeyRef) {
        const data = configData(e.valueFrom.configMapKeyRef.name);
        if (!data || !(e.valueFrom.configMapKeyRef.key in data)) {
          err(d, `container ${c.name}: env ${e.name} refers to ConfigMap key ${e.valueFrom.configMapKeyRef.name}/${e.valueFrom.configMapKeyRef.key}, which does not exist`);
        } else env.set(e.name, String(data[e.valueFrom.configMapKeyRef.key]));
      } else {
        env.set(e.name, e.valueFrom ? `<runtime ${e.name}>` : String(e.value ?? ""));
      }
    }
    return env;
  };
  const expand = (d, c, env, s) =>
    String(s).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, v) => {
      if (!env.has(v)) {
        err(d, `container ${c.name}: $(${v}) is not defined (no env or envFrom ConfigMap entry of that name)`);
        return "";
      }
      return env.get(v);
    });

  const hpas = ofKind("HorizontalPodAutoscaler");
  for (const d of workloads) {
    const pod = podSpecOf(d.doc);
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of pod.volumes || []) {
      if (v.persistentVolumeClaim && !named("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
        err(d, `volume ${v.name}: PersistentVolumeClaim '${v.persistentVolumeClaim.claimName}' is not among the manifests`);
      }
      if (v.configMap && !named("ConfigMap", v.configMap.name)) err(d, `volume ${v.name}: ConfigMap '${v.configMap.name}' is not among the manifests`);
      if (v.secret && !named("Secret", v.secret.secretName)) {
        if (!HAND_MADE_SECRETS.includes(v.secret.secretName)) {
          err(d, `volume ${v.name}: Secret '${v.secret.secretName}' is neither among the manifests nor a documented hand-made Secret`);
        } else if (!readme.includes(v.secret.secretName)) {
          err(d, `volume ${v.name}: Secret '${v.secret.secretName}' is made by hand, but deploy/README.md does not say how`);
        }
      }
    }
    for (const c of [...(pod.initContainers || []), ...(pod.containers || [])]) {
      const cw = `container ${c.name}`;
      const r = c.resources || {};
      for (const need of ["requests.cpu", "requests.memory", "limits.memory"]) {
        const [a, b] = need.split(".");
        if (!r[a]?.[b]) err(d, `${cw}: resources.${need} is missing`);
      }
      const image = String(c.image || "");
      const tag = /:([^:/@]+)$/.exec(image.replace(/@sha256:[0-9a-f]{64}$/, ""))?.[1];
      if (!/@sha256:[0-9a-f]{64}$/.test(image) && (!tag || tag === "latest")) {
        err(d, `${cw}: image '${image}' is not pinned (a version tag or @sha256 digest, never latest or none)`);
      }
      const sc = c.securityContext || {};
      if (!(sc.runAsNonRoot ?? pod.securityContext?.runAsNonRoot)) err(d, `${cw}: runAsNonRoot is not set`);
      if ((sc.runAsUser ?? pod.securityContext?.runAsUser) === 0) err(d, `${cw}: runs as user 0`);
      if (sc.readOnlyRootFilesystem !== true) err(d, `${cw}: securityContext.readOnlyRootFilesystem is not true`);
      if (sc.allowPrivilegeEscalation !== false) err(d, `${cw}: securityContext.allowPrivilegeEscalation is not false`);
      const mounts = new Map();
      for (const m of c.volumeMounts || []) {
        if (!volumes.has(m.name)) err(d, `${cw}: volumeMount ${m.name} has no volume of that name`);
        mounts.set(m.mountPath, { ...m, volume: volumes.get(m.name) });
      }
      const env = envOf(d, c);
      const args = [...(c.command || []), ...(c.args || [])].map((a) => String(a));
      const expanded = args.map((a) => expand(d, c, env, a));
      for (const p of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        const port = p?.httpGet?.port ?? p?.tcpSocket?.port;
        if (typeof port === "string" && !(c.ports || []).some((x) => x.name === port)) {
          err(d, `${cw}: a probe uses port '${port}', which the container does not name`);
        }
      }

      const isBiref = /(^|\/)biref[:@]/.test(image);
      if (!isBiref) continue;
      const cmd = expanded[0];
      if (!BIREF_COMMANDS.has(cmd)) {
        err(d, `${cw}: args must start with a biref command (the image's ENTRYPOINT is biref), not '${cmd}'`);
        continue;
      }
      const flags = parseFlags(args);
      const known = knownFlags(cmd);
      if (known) for (const f of flags.keys()) if (!known.has(f)) err(d, `${cw}: 'biref ${cmd}' has no flag ${f} (see biref ${cmd} --help)`);
      if (sc.readOnlyRootFilesystem && !(mounts.get("/tmp")?.volume?.emptyDir)) {
        err(d, `${cw}: the root filesystem is read-only but /tmp (download locks, temporary files) is no emptyDir`);
      }
      const cache = env.get("BIREF_CACHE");
      if (cache !== undefined) {
        const m = mounts.get(cache.replace(/\/+$/, ""));
        if (!m?.volume?.persistentVolumeClaim) err(d, `${cw}: BIREF_CACHE=${cache} is not the mountPath of a PersistentVolumeClaim volume`);
      }

      if (cmd === "serve") {
        if (d.doc.kind !== "Deployment") err(d, `${cw}: biref serve belongs in a Deployment`);
        const probes = { livenessProbe: "/healthz", readinessProbe: "/readyz", startupProbe: "/healthz" };
        for (const [p, want] of Object.entries(probes)) {
          const got = c[p]?.httpGet?.path;
          if (got !== want) err(d, `${cw}: ${p} must be an httpGet of ${want} (it is ${got ?? "missing"})`);
        }
        const port = Number(expand(d, c, env, flags.get("--port") ?? "8080"));
        const cport = (c.ports || []).find((x) => x.containerPort === port);
        if (!cport) err(d, `${cw}: --port ${port} is not among the container's ports`);
        for (const p of Object.keys(probes)) {
          const pp = c[p]?.httpGet?.port;
          if (pp !== undefined && pp !== port && pp !== cport?.name) err(d, `${cw}: ${p} port ${pp} is not --port ${port}`);
        }
        const host = expand(d, c, env, flags.get("--host") ?? "127.0.0.1");
        if (!["127.0.0.1", "::1", "localhost"].includes(host)) {
          const tf = flags.get("--token-file");
          if (!tf || tf === true) err(d, `${cw}: --host ${host} is not loopback, so biref needs --token-file`);
          else {
            const m = mounts.get(path.posix.dirname(tf));
            if (!m?.volume?.secret) err(d, `${cw}: --token-file ${tf} is not in a directory mounted from a Secret`);
          }
        }
        const drainRaw = flags.get("--drain-timeout");
        const drain = Number(drainRaw === undefined ? 30 : expand(d, c, env, drainRaw));
        const stop = preStopSeconds(c);
        const grace = pod.terminationGracePeriodSeconds ?? 30;
        if (!Number.isFinite(drain)) err(d, `${cw}: --drain-timeout is not a number`);
        if (stop <= 0) err(d, `${cw}: no preStop sleep: the pod would get SIGTERM while still in the Service's endpoints`);
        if (!(grace > drain + stop)) {
          err(d, `terminationGracePeriodSeconds ${grace} must exceed the preStop sleep (${stop} s) plus --drain-timeout (${drain} s)`);
        }
        const redis = expand(d, c, env, flags.get("--redis") ?? "");
        const rm = /^redis:\/\/(?:[^@/]*@)?([^:/]+)(?::(\d+))?/.exec(redis);
        if (redis && !rm) err(d, `${cw}: --redis '${redis}' is not redis://[:PASSWORD@]HOST[:PORT][/DB]`);
        if (rm && !rm[1].includes(".")) {
          const svc = named("Service", rm[1]);
          const rport = Number(rm[2] || 6379);
          if (!svc) err(d, `${cw}: --redis host '${rm[1]}' is no Service of the manifests`);
          else if (!(svc.doc.spec?.ports || []).some((p) => p.port === rport)) err(d, `${cw}: Service ${rm[1]} has no port ${rport}`);
        }
        // biref's download lock lives in the pod's /tmp: a cache shared by replicas must be
        // read-only to them (model-fetch-job.yaml is the one writer).
        const cm = cache !== undefined && mounts.get(cache.replace(/\/+$/, ""));
        const replicasMax = Math.max(d.doc.spec?.replicas ?? 1, ...hpas.filter((h) => h.doc.spec?.scaleTargetRef?.name === d.doc.metadata?.name).map((h) => h.doc.spec?.maxReplicas ?? 1));
        if (cm && replicasMax > 1 && !cm.readOnly) err(d, `${cw}: the model cache ${cache} is shared by up to ${replicasMax} replicas, so it must be mounted readOnly`);
      }

      if (cmd === "segment" && d.doc.kind === "Job") {
        const s = d.doc.spec || {};
        if (s.completionMode !== "Indexed") err(d, `a biref segment Job must be completionMode: Indexed (it is ${s.completionMode ?? "NonIndexed"})`);
        const shard = flags.get("--shard");
        const sm = /^\$\(JOB_COMPLETION_INDEX\)\/(\d+)$/.exec(String(shard));
        if (!sm) err(d, `${cw}: --shard must be $(JOB_COMPLETION_INDEX)/N (it is ${shard ?? "missing"})`);
        else if (Number(sm[1]) !== s.completions) err(d, `${cw}: --shard .../${sm[1]} but completions is ${s.completions}: shards would be lost or empty`);
        if (!(s.parallelism >= 1 && s.parallelism <= s.completions)) err(d, `parallelism ${s.parallelism} must be 1..completions (${s.completions})`);
        if (!flags.has("--skip-existing")) err(d, `${cw}: without --skip-existing a retried pod redoes its whole shard`);
      }
    }
  }

  for (const d of ofKind("Service")) {
    const sel = d.doc.spec?.selector;
    const targets = workloads.filter((w) => matches(sel, podLabelsOf(w.doc)));
    if (targets.length === 0) err(d, `selector ${JSON.stringify(sel)} matches no pod template of the manifests`);
    for (const p of d.doc.spec?.ports || []) {
      if (typeof p.targetPort === "string" && !targets.some((w) => podSpecOf(w.doc).containers.some((c) => (c.ports || []).some((x) => x.name === p.targetPort)))) {
        err(d, `targetPort '${p.targetPort}' is no named port of the selected pods`);
      }
    }
  }
  for (const d of hpas) {
    const s = d.doc.spec || {};
    const t = s.scaleTargetRef || {};
    const target = named(t.kind, t.name);
    if (t.kind !== "Deployment" || t.apiVersion !== "apps/v1" || !target) {
      err(d, `scaleTargetRef ${t.apiVersion} ${t.kind}/${t.name} is no Deployment of the manifests`);
    } else {
      for (const c of podSpecOf(target.doc).containers) if (!c.resources?.requests?.cpu) err(d, `target container ${c.name} has no CPU request, so CPU utilisation is undefined`);
    }
    const cpu = (s.metrics || []).some((m) => m.type === "Resource" && m.resource?.name === "cpu" && m.resource?.target?.type === "Utilization");
    if (!cpu) err(d, "no Resource cpu Utilization metric");
    if (!(s.minReplicas >= 1 && s.minReplicas <= s.maxReplicas)) err(d, `minReplicas ${s.minReplicas} must be 1..maxReplicas ${s.maxReplicas}`);
  }
  for (const d of ofKind("PodDisruptionBudget")) {
    const sel = d.doc.spec?.selector?.matchLabels;
    const targets = workloads.filter((w) => w.doc.kind === "Deployment" && matches(sel, podLabelsOf(w.doc)));
    if (targets.length === 0) err(d, `selector ${JSON.stringify(sel)} matches no Deployment's pods`);
    for (const t of targets) {
      const hpa = hpas.find((h) => h.doc.spec?.scaleTargetRef?.name === t.doc.metadata?.name);
      const min = hpa?.doc.spec?.minReplicas ?? t.doc.spec?.replicas ?? 1;
      const ma = d.doc.spec?.minAvailable;
      if (Number.isInteger(ma) && ma >= min) err(d, `minAvailable ${ma} >= the ${min} replicas of ${t.doc.metadata.name}: no node could ever be drained`);
    }
  }
  if (!workloads.some((w) => w.doc.kind === "Job" && w.doc.spec?.completionMode === "Indexed")) errors.push("no Indexed Job for bulk folders");
  if (hpas.length === 0) errors.push("no HorizontalPodAutoscaler");
  if (ofKind("PodDisruptionBudget").length === 0) errors.push("no PodDisruptionBudget");
  return { errors, count: docs.length };
}

// ---------------------------------------------------------------------------------------------
// The Containerfile

function instructions(text) {
  const out = [];
  let cur = "";
  for (const raw of text.split("\n")) {
    if (/^\s*#/.test(raw) && cur === "") continue;
    if (/^\s*#/.test(raw)) continue;  // a comment inside a continued instruction
    const line = raw.replace(/\s+$/, "");
    if (line.endsWith("\\")) { cur += line.slice(0, -1) + " "; continue; }
    cur += line;
    if (cur.trim()) {
      const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(cur);
      out.push({ op: m[1].toUpperCase(), rest: m[2] });
    }
    cur = "";
  }
  return out;
}

const linkedCache = new Map();  // dpkg -S is slow: once per binary, not once per self-test copy
function linkedPackages(binary) {
  if (!linkedCache.has(binary)) linkedCache.set(binary, linkedPackagesUncached(binary));
  return linkedCache.get(binary);
}
function linkedPackagesUncached(binary) {
  // NEEDED entries of the binary -> the Debian packages that own them.
  const needed = execFileSync("readelf", ["-d", binary], { encoding: "utf8" })
    .split("\n").map((l) => /\(NEEDED\).*\[(.+)\]/.exec(l)?.[1]).filter(Boolean);
  const ldd = execFileSync("ldd", [binary], { encoding: "utf8" });
  const pkgs = new Map();
  for (const lib of needed) {
    const p = new RegExp(`^\\s*${lib.replace(/[.+]/g, "\\$&")} => (\\S+)`, "m").exec(ldd)?.[1];
    if (!p) throw new Error(`ldd does not resolve ${lib}`);
    let owner;
    for (const candidate of [p, fs.realpathSync(p)]) {
      try {
        owner = execFileSync("dpkg", ["-S", candidate], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).split(":")[0];
        break;
      } catch { /* try the resolved path */ }
    }
    if (!owner) throw new Error(`no Debian package owns ${p}`);
    pkgs.set(lib, owner);
  }
  return pkgs;
}

function checkContainerfile(file, cmakeLists, binary) {
  const errors = [];
  const notes = [];
  if (!fs.existsSync(file)) return { errors: [`${file} is missing`], notes };
  const ins = instructions(fs.readFileSync(file, "utf8"));
  const stages = [];
  for (const i of ins) {
    if (i.op === "FROM") stages.push({ from: i.rest, ins: [] });
    else if (stages.length) stages.at(-1).ins.push(i);
    else if (i.op !== "ARG") errors.push(`${i.op} before the first FROM`);
  }
  if (stages.length < 2) errors.push(`multi-stage build expected (a build and a runtime stage); found ${stages.length} FROM`);
  for (const s of stages) {
    const [image] = s.from.split(/\s+/);
    if (/^--/.test(image)) continue;
    const named = stages.some((o) => new RegExp(`\\s+AS\\s+${image}$`, "i").test(o.from));
    if (named) continue;
    const digest = /@sha256:[0-9a-f]{64}$/.test(image);
    const tag = /:([^:/@]+)(@|$)/.exec(image)?.[1];
    if (!digest && (!tag || tag === "latest" || !/\d/.test(tag))) errors.push(`FROM ${image}: not pinned (a versioned tag such as debian:12.11-slim, or a digest)`);
    if (!/^(docker\.io\/(library\/)?)?debian:(12[.\d]*|bookworm)/.test(image)) errors.push(`FROM ${image}: the base must be Debian 12 (bookworm)`);
  }
  const all = ins.map((i) => `${i.op} ${i.rest}`).join("\n");
  // The portable build: each -D option named must exist in CMakeLists.txt.
  const cmakeText = fs.readFileSync(cmakeLists, "utf8");
  const want = { BIREF_NATIVE: "OFF", BIREF_BUILD_TESTS: "OFF", BIREF_BUILD_BENCH: "OFF" };
  for (const [opt, val] of Object.entries(want)) {
    if (!new RegExp(`-D${opt}=${val}\\b`).test(all)) errors.push(`the build must configure -D${opt}=${val}`);
  }
  for (const m of all.matchAll(/-D(BIREF_[A-Z_]+)=/g)) {
    if (!new RegExp(`option\\(${m[1]}\\b`).test(cmakeText)) errors.push(`-D${m[1]} is no option() of CMakeLists.txt`);
  }
  const runtime = stages.at(-1);
  if (!runtime) return { errors, notes };
  const rt = runtime.ins;
  const users = rt.filter((i) => i.op === "USER");
  const user = users.at(-1)?.rest.trim();
  if (!user || /^(root|0)(:|$)/.test(user)) errors.push(`the runtime stage must end as a non-root USER (it is ${user ?? "root by default"})`);
  if (!rt.some((i) => i.op === "EXPOSE" && /\b8080\b/.test(i.rest))) errors.push("the runtime stage must EXPOSE 8080");
  const hc = rt.find((i) => i.op === "HEALTHCHECK");
  if (!hc || !/\b(curl|wget)\b/.test(hc.rest) || !hc.rest.includes("/healthz")) errors.push("HEALTHCHECK must call /healthz with curl or wget");
  const ep = rt.find((i) => i.op === "ENTRYPOINT");
  let epArgs;
  try { epArgs = ep && JSON.parse(ep.rest); } catch { epArgs = undefined; }
  if (!Array.isArray(epArgs) || !/(^|\/)biref$/.test(epArgs[0])) errors.push(`ENTRYPOINT must be the exec form ["…/biref"] (it is ${ep?.rest ?? "missing"})`);
  if (!rt.some((i) => i.op === "COPY" && /--from=\S+/.test(i.rest) && /biref\b/.test(i.rest))) errors.push("the runtime stage must COPY --from the build stage the biref binary");
  const aptRuntime = rt.filter((i) => i.op === "RUN").map((i) => i.rest).join(" ");
  const installed = new Set();
  for (const m of aptRuntime.matchAll(/apt-get\s+install\s+([^;&|]+)/g)) {
    for (const w of m[1].split(/\s+/)) if (w && !w.startsWith("-")) installed.add(w);
  }
  for (const p of installed) if (/-dev$/.test(p)) errors.push(`the runtime stage installs the development package ${p}`);
  if (hc) {
    const tool = /\b(curl|wget)\b/.exec(hc.rest)?.[1];
    if (tool && !installed.has(tool)) errors.push(`HEALTHCHECK uses ${tool}, which the runtime stage does not install`);
  }
  if (!installed.has("ca-certificates")) errors.push("the runtime stage must install ca-certificates (model downloads use HTTPS)");
  if (binary && fs.existsSync(binary)) {
    let pkgs;
    try {
      pkgs = linkedPackages(binary);
    } catch (e) {
      notes.push(`runtime libraries not compared: ${e.message}`);
    }
    if (pkgs) {
      for (const [lib, pkg] of pkgs) {
        if (pkg === "libc6") continue;  // in every Debian image
        if (!installed.has(pkg)) errors.push(`${path.basename(binary)} links ${lib} (Debian package ${pkg}), which the runtime stage does not install`);
      }
      notes.push(`runtime packages cover what ${path.relative(ROOT, binary)} links: ${[...new Set(pkgs.values())].join(" ")}`);
    }
  } else {
    notes.push(`runtime libraries not compared: no binary at ${binary} (build it first)`);
  }
  return { errors, notes };
}

// ---------------------------------------------------------------------------------------------
// The self-test: one defect per broken copy, each of which must be reported.

function editYaml(file, fn) {
  const docs = yaml.loadAll(fs.readFileSync(file, "utf8"));
  fn(docs);
  fs.writeFileSync(file, docs.map((d) => yaml.dump(d, { lineWidth: -1 })).join("---\n"));
}
const serverContainer = (docs) => docs[0].spec.template.spec.containers[0];

const MUTATIONS = [
  { name: "unknown field (a typo: livenesProbe)", file: "kubernetes/deployment.yaml", expect: /unknown field 'spec\.template\.spec\.containers\[0\]\.livenesProbe'/,
    edit: (d) => { const c = serverContainer(d); c.livenesProbe = c.livenessProbe; delete c.livenessProbe; } },
  { name: "unknown nested field", file: "kubernetes/hpa.yaml", expect: /unknown field 'spec\.metrics\[0\]\.resource\.target\.averageUtilisation'/,
    edit: (d) => { const t = d[0].spec.metrics[0].resource.target; t.averageUtilisation = t.averageUtilization; } },
  { name: "required field missing (selector)", file: "kubernetes/deployment.yaml", expect: /must have required property '?selector/,
    edit: (d) => { delete d[0].spec.selector; } },
  { name: "required field missing (container name)", file: "kubernetes/bulk/segment-job.yaml", expect: /containers\/0 must have required property '?name/,
    edit: (d) => { delete d[0].spec.template.spec.containers[0].name; } },
  { name: "wrong type (replicas: \"two\")", file: "kubernetes/deployment.yaml", expect: /replicas must be integer/,
    edit: (d) => { d[0].spec.replicas = "two"; } },
  { name: "wrong type (containerPort as text)", file: "kubernetes/redis.yaml", expect: /containerPort must be integer/,
    edit: (d) => { d[0].spec.template.spec.containers[0].ports[0].containerPort = "6379/tcp"; } },
  { name: "unknown apiVersion", file: "kubernetes/hpa.yaml", expect: /no such kind in the Kubernetes API/,
    edit: (d) => { d[0].apiVersion = "autoscaling/v2beta9"; } },
  { name: "YAML syntax error", file: "kubernetes/service.yaml", expect: /YAML does not parse/,
    text: (s) => s.replace("  ports:\n", "  ports:\n   - : [\n") },
  { name: "liveness probe on the wrong path", file: "kubernetes/deployment.yaml", expect: /livenessProbe must be an httpGet of \/healthz/,
    edit: (d) => { serverContainer(d).livenessProbe.httpGet.path = "/health"; } },
  { name: "readiness probe missing", file: "kubernetes/deployment.yaml", expect: /readinessProbe must be an httpGet of \/readyz/,
    edit: (d) => { delete serverContainer(d).readinessProbe; } },
  { name: "image :latest", file: "kubernetes/redis.yaml", expect: /image 'redis:latest' is not pinned/,
    edit: (d) => { d[0].spec.template.spec.containers[0].image = "redis:latest"; } },
  { name: "container without resources", file: "kubernetes/model-fetch-job.yaml", expect: /resources\.requests\.cpu is missing/,
    edit: (d) => { delete d[0].spec.template.spec.containers[0].resources; } },
  { name: "bulk Job not Indexed", file: "kubernetes/bulk/segment-job.yaml", expect: /completionMode: Indexed/,
    edit: (d) => { d[0].spec.completionMode = "NonIndexed"; } },
  { name: "--shard N differs from completions", file: "kubernetes/bulk/segment-job.yaml", expect: /but completions is 6/,
    edit: (d) => { d[0].spec.completions = 6; d[0].spec.parallelism = 3; } },
  { name: "--shard without the completion index", file: "kubernetes/bulk/segment-job.yaml", expect: /--shard must be \$\(JOB_COMPLETION_INDEX\)\/N/,
    edit: (d) => { const a = d[0].spec.template.spec.containers[0].args; a[a.indexOf("--shard") + 1] = "0/8"; } },
  { name: "HPA aimed at a missing Deployment", file: "kubernetes/hpa.yaml", expect: /scaleTargetRef apps\/v1 Deployment\/biref-server is no Deployment/,
    edit: (d) => { d[0].spec.scaleTargetRef.name = "biref-server"; } },
  { name: "kustomization misses a file", file: "kubernetes/kustomization.yaml", expect: /resources does not list pdb\.yaml/,
    edit: (d) => { d[0].resources = d[0].resources.filter((r) => r !== "pdb.yaml"); } },
  { name: "grace period within the drain timeout", file: "kubernetes/deployment.yaml", expect: /terminationGracePeriodSeconds 35 must exceed/,
    edit: (d) => { d[0].spec.template.spec.terminationGracePeriodSeconds = 35; } },
  { name: "drain timeout raised past the grace period", file: "kubernetes/configmap.yaml", expect: /terminationGracePeriodSeconds 60 must exceed .* --drain-timeout \(55 s\)/,
    edit: (d) => { d[0].data.BIREF_DRAIN_TIMEOUT = "55"; } },
  { name: "$(VAR) with no definition", file: "kubernetes/deployment.yaml", expect: /\$\(BIREF_WORKER\) is not defined/,
    edit: (d) => { const a = serverContainer(d).args; a[a.indexOf("--workers=$(BIREF_WORKERS)")] = "--workers=$(BIREF_WORKER)"; } },
  { name: "non-loopback host without --token-file", file: "kubernetes/deployment.yaml", expect: /needs --token-file/,
    edit: (d) => { const c = serverContainer(d); c.args = c.args.filter((a) => !a.startsWith("--token-file")); } },
  { name: "Service selecting no pods", file: "kubernetes/service.yaml", expect: /matches no pod template/,
    edit: (d) => { d[0].spec.selector["app.kubernetes.io/component"] = "api"; } },
  { name: "shared model cache mounted writable", file: "kubernetes/deployment.yaml", expect: /must be mounted readOnly/,
    edit: (d) => { serverContainer(d).volumeMounts.find((m) => m.name === "model-cache").readOnly = false; } },
  { name: "no preStop sleep", file: "kubernetes/deployment.yaml", expect: /no preStop sleep/,
    edit: (d) => { delete serverContainer(d).lifecycle; } },
  { name: "Containerfile: runtime runs as root", file: "Containerfile", containerfile: true, expect: /non-root USER/,
    text: (s) => s.replace(/^USER .*$/m, "USER root") },
  { name: "Containerfile: unpinned base", file: "Containerfile", containerfile: true, expect: /not pinned/,
    text: (s) => s.replace(/^FROM debian:[^\s]+ AS runtime/m, "FROM debian:latest AS runtime") },
  { name: "Containerfile: native build", file: "Containerfile", containerfile: true, expect: /-DBIREF_NATIVE=OFF/,
    text: (s) => s.replace("-DBIREF_NATIVE=OFF", "-DBIREF_NATIVE=ON") },
  { name: "Containerfile: no HEALTHCHECK", file: "Containerfile", containerfile: true, expect: /HEALTHCHECK must call \/healthz/,
    text: (s) => s.replace(/^HEALTHCHECK[^\n]*(\\\n[^\n]*)*\n/m, "").replace(/^\s+CMD curl[^\n]*\n/m, "") },
];
if (fs.existsSync(BIREF)) {
  MUTATIONS.push(
    { name: "Containerfile: a linked runtime library missing", file: "Containerfile", containerfile: true, expect: /links libhiredis\.so\.\S+ \(Debian package libhiredis0\.14\)/,
      text: (s) => s.replace(/libhiredis0\.14 libstdc\+\+6/, "libstdc++6") },
    { name: "a flag biref does not have", file: "kubernetes/deployment.yaml", expect: /'biref serve' has no flag --worker-count/,
      edit: (d) => { const a = serverContainer(d).args; a[a.indexOf("--workers=$(BIREF_WORKERS)")] = "--worker-count=$(BIREF_WORKERS)"; } },
  );
}

async function runChecks(deployDir) {
  const readmePath = path.join(deployDir, "README.md");
  const readme = fs.existsSync(readmePath) ? fs.readFileSync(readmePath, "utf8") : "";
  const m = await checkManifests(path.join(deployDir, "kubernetes"), readme);
  const c = checkContainerfile(path.join(deployDir, "Containerfile"), path.join(ROOT, "CMakeLists.txt"), BIREF);
  return { manifests: m, containerfile: c };
}

// ---------------------------------------------------------------------------------------------

const deployDir = path.join(ROOT, "deploy");
let failed = 0;
const real = await runChecks(deployDir);
console.log(`deploy/kubernetes: ${real.manifests.count} documents validated against the Kubernetes schemas and the project's rules`);
for (const e of real.manifests.errors) console.log(`  FAIL ${e}`);
console.log(`deploy/Containerfile: static checks`);
for (const n of real.containerfile.notes) console.log(`  note: ${n}`);
for (const e of real.containerfile.errors) console.log(`  FAIL ${e}`);
failed += real.manifests.errors.length + real.containerfile.errors.length;

let caught = 0;
if (SELF_TEST) {
  console.log(`self-test: ${MUTATIONS.length} broken copies of deploy/, each must be rejected`);
  for (const mu of MUTATIONS) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "biref-deploy-"));
    try {
      fs.cpSync(deployDir, tmp, { recursive: true });
      const f = path.join(tmp, mu.file);
      if (mu.edit) editYaml(f, mu.edit);
      else {
        const before = fs.readFileSync(f, "utf8");
        const after = mu.text(before);
        if (after === before) throw new Error("the mutation changed nothing (the file no longer has what it edits)");
        fs.writeFileSync(f, after);
      }
      const r = await runChecks(tmp);
      const errs = mu.containerfile ? r.containerfile.errors : r.manifests.errors;
      const hit = errs.find((e) => mu.expect.test(e));
      if (hit) {
        caught++;
        console.log(`  ok   ${mu.name}: ${hit.length > 160 ? hit.slice(0, 157) + "..." : hit}`);
      } else {
        failed++;
        console.log(`  FAIL ${mu.name}: not rejected as expected (${mu.expect}); errors were:\n         ${errs.join("\n         ") || "(none)"}`);
      }
    } catch (e) {
      failed++;
      console.log(`  FAIL ${mu.name}: ${e.message}`);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
}
const total = 2 + (SELF_TEST ? MUTATIONS.length : 0);
const realFailed = (real.manifests.errors.length > 0) + (real.containerfile.errors.length > 0);
const selfFailed = SELF_TEST ? MUTATIONS.length - caught : 0;
console.log(`deploy validation: ${total - realFailed - selfFailed} passed, ${realFailed + selfFailed} failed`);
process.exit(failed === 0 ? 0 : 1);
