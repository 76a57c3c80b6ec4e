// The job page's results: the structure in Mol* coloured by pLDDT, and the PAE heatmap.
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
    // The B-factor column holds pLDDT (0-100): Mol*'s uncertainty theme colours by it.
    for (const structure of structures) {
      await plugin.managers.structure.component.updateRepresentationsTheme(structure.components, {
        color: "uncertainty",
        colorParams: { domain: [50, 90], list: { kind: "interpolate", colors: [[0xff7d45, 0], [0xffdb13, 0.33], [0x65cbf3, 0.66], [0x0053d6, 1]] } },
      });
    }
    const data = structures.length ? structures[0].cell.obj.data : null;
    element.dataset.atoms = data ? String(data.elementCount) : "0";
    element.dataset.loaded = data && data.elementCount > 0 ? "true" : "empty";
    window.phonosViewer = viewer;
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
    ctx.fillStyle = "#555"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("1", margin - 12, 14); ctx.fillText(String(n), margin - 4 - 7 * String(n).length, 4 + size);
    ctx.fillText("residue", margin + size / 2 - 18, canvas.height - 2);
    canvas.dataset.residues = String(n);
    canvas.dataset.loaded = "true";
    document.getElementById("pae-caption").textContent +=
      ` ${n} residues; colour scale 0–${max.toFixed(1)} Å; pTM ${confidence.ptm ?? "—"}.`;
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
