// The method's graph from the validate answer's graph_spec: the pipes that do the work, in layers left to right,
// with the concepts flowing between them; the method's inputs on the left. Controllers are named in the caption.

import { el, svg, clear } from "./dom.js";

const NODE_W = 190;
const NODE_H = 50;
const GAP_X = 80;
const GAP_Y = 22;
const PAD = 16;
const BAND_GAP = 36;

function shortConcept(concept) {
  return String(concept || "").split(".").pop();
}

function layout(spec, maxWidth) {
  const nodes = spec.nodes || [];
  const operators = nodes.filter((node) => node.kind !== "controller");
  const shown = operators.length ? operators : nodes;
  const ids = new Set(shown.map((node) => node.id));
  const edges = (spec.edges || []).filter((edge) => edge.kind === "data" && ids.has(edge.source) && ids.has(edge.target));
  const root = nodes[0];
  // the method's inputs: those of the entry pipe, drawn as their own nodes feeding the pipes that read them
  const produced = new Map(); // target id -> names it receives from another pipe
  for (const edge of edges) {
    if (!produced.has(edge.target)) produced.set(edge.target, new Set());
    produced.get(edge.target).add(edge.label);
  }
  const inputNodes = [];
  const inputEdges = [];
  for (const input of root?.io?.inputs || []) {
    const id = `input:${input.name}`;
    const readers = shown.filter((node) => (node.io?.inputs || []).some((item) => item.name === input.name) && !produced.get(node.id)?.has(input.name));
    if (!readers.length) continue;
    inputNodes.push({ id, io: true, title: input.name, sub: shortConcept(input.concept) });
    for (const reader of readers) inputEdges.push({ source: id, target: reader.id, label: null });
  }
  const all = [...inputNodes, ...shown.map((node) => ({ id: node.id, title: node.pipe_code, sub: node.pipe_type, outputs: node.io?.outputs || [] }))];
  const allEdges = [...inputEdges, ...edges.map((edge) => ({ source: edge.source, target: edge.target, label: edge.label }))];
  // longest-path layering (the graph is a DAG; a cycle is cut by the visit guard)
  const incoming = new Map(all.map((node) => [node.id, []]));
  for (const edge of allEdges) incoming.get(edge.target)?.push(edge.source);
  const layerOf = new Map();
  const visiting = new Set();
  const layerFor = (id) => {
    if (layerOf.has(id)) return layerOf.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const sources = incoming.get(id) || [];
    const layer = sources.length ? Math.max(...sources.map((source) => layerFor(source) + 1)) : 0;
    layerOf.set(id, layer);
    return layer;
  };
  all.forEach((node) => layerFor(node.id));
  const layers = [];
  for (const node of all) (layers[layerOf.get(node.id)] ||= []).push(node);
  // layers left to right; a long chain wraps into bands (rows of layers) that fit the container's width
  const perBand = Math.max(2, Math.floor((maxWidth - PAD * 2 + GAP_X) / (NODE_W + GAP_X)));
  const bands = [];
  for (let start = 0; start < layers.length; start += perBand) bands.push(layers.slice(start, start + perBand));
  const position = new Map();
  let top = PAD;
  for (const band of bands) {
    band.forEach((column, x) => column.forEach((node, y) => position.set(node.id, { x: PAD + x * (NODE_W + GAP_X), y: top + y * (NODE_H + GAP_Y) })));
    top += Math.max(...band.map((column) => column.length)) * (NODE_H + GAP_Y) + BAND_GAP;
  }
  const columns = Math.min(perBand, layers.length);
  const width = PAD * 2 + columns * NODE_W + Math.max(0, columns - 1) * GAP_X;
  const height = top - BAND_GAP - GAP_Y + PAD;
  const controllers = nodes.filter((node) => node.kind === "controller");
  return { all, allEdges, position, width, height, controllers };
}

function clip(text, max) {
  const value = String(text ?? "");
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

export function renderGraph(container, spec) {
  if (!spec || !(spec.nodes || []).length) {
    clear(container, el("p", { class: "muted", text: "The runtime gave no graph for this method." }));
    return;
  }
  const { all, allEdges, position, width, height, controllers } = layout(spec, container.clientWidth || 1000);
  const drawing = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Graph of ${all.length} nodes` });
  drawing.append(
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))),
  );
  for (const edge of allEdges) {
    const from = position.get(edge.source);
    const to = position.get(edge.target);
    if (!from || !to) continue;
    let x1 = from.x + NODE_W;
    let y1 = from.y + NODE_H / 2;
    let x2 = to.x;
    let y2 = to.y + NODE_H / 2;
    let d = `M ${x1} ${y1} C ${(x1 + x2) / 2} ${y1}, ${(x1 + x2) / 2} ${y2}, ${x2} ${y2}`;
    if (to.x <= from.x) {
      // the next band: leave from the bottom, enter from the top
      x1 = from.x + NODE_W / 2;
      y1 = from.y + NODE_H;
      x2 = to.x + NODE_W / 2;
      y2 = to.y;
      d = `M ${x1} ${y1} C ${x1} ${y1 + BAND_GAP}, ${x2} ${y2 - BAND_GAP}, ${x2} ${y2}`;
    }
    const mid = (x1 + x2) / 2;
    drawing.append(svg("path", { class: "edge", d, "marker-end": "url(#arrow)" }));
    if (edge.label) drawing.append(svg("text", { class: "edge-label", x: mid, y: (y1 + y2) / 2 - 4, "text-anchor": "middle", text: clip(edge.label, 16) }));
  }
  for (const node of all) {
    const { x, y } = position.get(node.id);
    const out = (node.outputs || []).map((item) => shortConcept(item.concept)).join(", ");
    const group = svg("g", { class: node.io ? "node io" : "node", transform: `translate(${x} ${y})` },
      svg("title", { text: node.io ? `input ${node.title}: ${node.sub}` : `${node.title} (${node.sub})${out ? ` → ${out}` : ""}` }),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 7 }),
      svg("text", { x: 10, y: 20, text: clip(node.title, 24) }),
      svg("text", { x: 10, y: 38, class: "sub", text: clip(node.io ? `input · ${node.sub}` : `${node.sub}${out ? ` → ${out}` : ""}`, 28) }),
    );
    drawing.append(group);
  }
  const caption = controllers.length
    ? `${all.length} nodes. Controllers: ${controllers.map((node) => `${node.pipe_code} (${node.pipe_type})`).join(", ")}`
    : `${all.length} nodes`;
  clear(container, el("p", { class: "graph-caption muted", text: caption }), drawing);
}
