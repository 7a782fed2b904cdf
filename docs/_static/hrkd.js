// A display equation wider than the text column is scaled down to fit (to 60% at the least; a wider one scrolls),
// rather than having its end cut off at the column's edge.
(function () {
  function fit() {
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (e) {
      if (e.dataset.fontSize === undefined) e.dataset.fontSize = e.style.fontSize;  // MathJax's own scaling
      e.style.fontSize = e.dataset.fontSize;
      var room = e.parentElement.clientWidth, need = e.scrollWidth;
      if (need > room + 1) {
        var size = parseFloat(getComputedStyle(e).fontSize);
        e.style.fontSize = (size * Math.max(0.6, (room - 2) / need)) + 'px';
      }
    });
  }
  function whenTypeset() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(fit);
  }
  window.addEventListener('load', whenTypeset);
  window.addEventListener('resize', fit);
})();
