// Show the inputs and parameters of the chosen model only, and its cost on the submit button.
(function () {
  "use strict";
  const select = document.getElementById("id_model");
  function update() {
    const option = select.selectedOptions[0];
    document.getElementById("cost").textContent = option.dataset.cost;
    for (const element of document.querySelectorAll("[data-model]")) {
      element.hidden = element.dataset.model !== select.value;
    }
    for (const type of ["structure_prediction", "docking"]) {
      for (const element of document.querySelectorAll(".for-" + type)) {
        element.hidden = option.dataset.type !== type;
      }
    }
  }
  select.addEventListener("change", update);
  update();
})();
