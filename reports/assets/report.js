// autocompress report: draws every figure from the embedded JSON and makes tables sortable.
(function () {
  "use strict";
  var figs = JSON.parse(document.getElementById("report-figures").textContent);
  var config = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                toImageButtonOptions: {format: "svg", scale: 1}};
  Object.keys(figs).forEach(function (id) {
    var el = document.getElementById(id);
    if (el && window.Plotly) { Plotly.newPlot(el, figs[id].data, figs[id].layout, config); }
  });
  function cellValue(td) {
    var v = td.getAttribute("data-value");
    if (v === null) { v = td.textContent; }
    var n = parseFloat(v);
    return (v !== "" && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("sorted-asc");
        table.querySelectorAll("thead th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
          if (x === y) { return 0; }
          if (x === "") { return 1; }
          if (y === "") { return -1; }
          return (x < y ? -1 : 1) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.body.setAttribute("data-rendered", "1");
})();
