/* ccpush console: copy buttons. A button with data-copy="ID" copies the text of the field
   ID and says so in the element data-copy-status names. Without the clipboard API (a page
   served over plain http to another host), it selects the text for the user to copy. The
   buttons are hidden until this script runs: without it, the field is there to copy from. */
"use strict";

function showCopyButtons(root) {
  for (const button of root.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
  }
}

async function copy(button) {
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById(button.dataset.copyStatus);
  try {
    await navigator.clipboard.writeText(field.value);
    status.textContent = "Copied to the clipboard.";
  } catch {
    field.focus();
    field.select();
    status.textContent = "Selected: press Ctrl+C (⌘C on a Mac) to copy it.";
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (button) {
    copy(button);
  }
});

if (window.htmx) {
  htmx.onLoad(showCopyButtons); // the page, and every part htmx swaps in
} else {
  document.addEventListener("DOMContentLoaded", () => showCopyButtons(document));
}
