// The job page's results: the structure in Mol* coloured by pLDDT or by chain, and the PAE
// heatmap with lines at the chain boundaries of a complex.
// Each element gets data-loaded="true" once drawn (the browser tests wait on it).
(function () {
  "use strict";

  async function showStructure(element) {
    const viewer = await molstar.Viewer.create(element, {
      layoutIsExpanded: false,
      layoutShowControls: false,
      layoutShowRemoteState: false,
      layoutShowSequence: true,
      layoutShowLog: false,
      layoutShowLeftPanel: false,
      viewportShowExpand: true,
      viewportShowSelectionMode: false,
      viewportShowAnimation: false,
      collapseLeftPanel: true,
    });
    await viewer.loadStructureFromUrl(element.dataset.structureUrl, element.dataset.format, false);
    const plugin = viewer.plugin;
    const structures = plugin.managers.structure.hierarchy.current.structures;
    await colourStructures(plugin, structures, "plddt");
    const select = document.getElementById("molstar-colour");
    if (select) {
      select.addEventListener("change", () => {
        colourStructures(plugin, structures, select.value).then(() => {
          element.dataset.colour = select.value;
        });
      });
    }
    const data = structures.length ? structures[0].cell.obj.data : null;
    element.dataset.atoms = data ? String(data.elementCount) : "0";
    element.dataset.loaded = data && data.elementCount > 0 ? "true" : "empty";
    window.phonosViewer = viewer;
  }

  async function colourStructures(plugin, structures, by) {
    // The B-factor column holds pLDDT (0-100): Mol*'s uncertainty theme colours by it.
    const theme = by === "chain"
      ? { color: "chain-id" }
      : {
        color: "uncertainty",
        colorParams: { domain: [50, 90], list: { kind: "interpolate", colors: [[0xff7d45, 0], [0xffdb13, 0.33], [0x65cbf3, 0.66], [0x0053d6, 1]] } },
      };
    for (const structure of structures) {
      await plugin.managers.structure.component.updateRepresentationsTheme(structure.components, theme);
    }
  }

  // Green (low error) to white (high), as AlphaFold DB draws PAE.
  function paeColour(value, max) {
    const t = Math.min(value / max, 1);
    const r = Math.round(30 + t * 225), g = Math.round(110 + t * 145), b = Math.round(40 + t * 215);
    return `rgb(${r},${g},${b})`;
  }

  async function showPae(canvas) {
    const response = await fetch(canvas.dataset.confidenceUrl, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`confidence: HTTP ${response.status}`);
    const confidence = await response.json();
    const pae = confidence.pae || [];
    const n = pae.length;
    if (!n) { canvas.dataset.loaded = "empty"; return; }
    const max = Math.max(30, ...pae.flat());
    const ctx = canvas.getContext("2d");
    const margin = 28, size = canvas.width - margin - 4, cell = size / n;
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        ctx.fillStyle = paeColour(pae[i][j], max);
        ctx.fillRect(margin + j * cell, 4 + i * cell, Math.ceil(cell), Math.ceil(cell));
      }
    }
    // A complex's chains: [start, end) offsets; a line where one chain ends and the next begins.
    const chains = confidence.chains || [];
    ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5;
    for (const chain of chains.slice(0, -1)) {
      const at = chain.end * cell;
      ctx.beginPath(); ctx.moveTo(margin + at, 4); ctx.lineTo(margin + at, 4 + size); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(margin, 4 + at); ctx.lineTo(margin + size, 4 + at); ctx.stroke();
    }
    canvas.dataset.chainBoundaries = chains.slice(0, -1).map((chain) => chain.end).join(",");
    ctx.fillStyle = "#555"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("1", margin - 12, 14); ctx.fillText(String(n), margin - 4 - 7 * String(n).length, 4 + size);
    ctx.fillText("residue", margin + size / 2 - 18, canvas.height - 2);
    canvas.dataset.residues = String(n);
    canvas.dataset.loaded = "true";
    document.getElementById("pae-caption").textContent +=
      ` ${n} residues; colour scale 0–${max.toFixed(1)} Å; pTM ${confidence.ptm ?? "—"}` +
      (chains.length > 1
        ? `; ipTM ${confidence.iptm ?? "—"}; chains ${chains.map((chain) => chain.id).join(", ")} (lines mark their boundaries).`
        : ".");
  }

  const viewerElement = document.getElementById("molstar");
  if (viewerElement) showStructure(viewerElement).catch((error) => {
    viewerElement.dataset.loaded = "error";
    viewerElement.dataset.error = String(error);
    viewerElement.textContent = "The 3D viewer could not start: " + error;
  });
  const paeCanvas = document.getElementById("pae");
  if (paeCanvas) showPae(paeCanvas).catch((error) => {
    paeCanvas.dataset.loaded = "error";
    paeCanvas.dataset.error = String(error);
  });
})();
