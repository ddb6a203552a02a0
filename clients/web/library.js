// The browser page's avatar library (docs/page.md): the server's avatars in the picker, and a photo
// uploaded as a new avatar (POST /avatars, with progress). Loaded before app.js, whose helpers
// ($, log, withToken, authHeaders, tokenHint, megabytes, switchAvatar, page) it calls at run time.
"use strict";
const PHOTO_TYPES = ["image/jpeg", "image/png", "image/webp"];
const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
const UPLOAD_WORDS = {
  bad_name: "that name cannot be used: 1 to 64 letters, digits, _ or -, and not \"default\"",
  not_an_image: "the file is not an image", truncated: "the image file is cut short",
  unsupported_format: "that image format is not taken: use JPEG, PNG or WebP",
  name_taken: "an avatar with that name exists already; choose another name",
  too_large: "the file is larger than this server takes",
  too_many_pixels: "the image has more pixels than this server takes",
  no_face: "no face was found in the photo: use one with a single face looking at the camera",
  uploads_disabled: "this server does not take photo uploads", library_full: "the server's avatar library is full",
};

// ---- avatar library and photo upload -----------------------------------------------------------
async function loadAvatars(select) {
  let res;
  try {
    res = await fetch(withToken("/avatars"), { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    return log(`Could not read the avatar list: ${err.message}.`);
  }
  page.needsToken = res.status === 401;
  if (page.needsToken) {
    $("state-text").textContent = tokenHint();
    return log(tokenHint());
  }
  if (!res.ok) return log(`Could not read the avatar list (HTTP ${res.status}).`);
  const body = await res.json();
  page.avatars = body.avatars || [];
  const sel = $("avatar"), keep = select || sel.value || "default";
  const label = (a) => (a.kind === "default" ? a.name : `${a.name} (${a.kind})`);
  sel.replaceChildren(...page.avatars.map((a) => new Option(label(a), a.name)));
  sel.value = page.avatars.some((a) => a.name === keep) ? keep : "default";
  page.upload = body.upload && body.upload.enabled ? body.upload : null;
  const form = $("upload-form");
  form.querySelectorAll("input, button").forEach((el) => { el.disabled = !page.upload; });
  if (page.upload) {
    $("photo").labels[0].textContent = `Photo (JPEG, PNG or WebP, up to ${megabytes(page.upload.max_bytes)} and `
      + `${(page.upload.max_pixels / 1e6).toFixed(0)} megapixels; one face looking at the camera)`;
  } else {
    uploadMessage("This server does not take photo uploads.", "");
  }
}

function uploadMessage(text, kind) { Object.assign($("upload-msg"), { textContent: text, className: kind }); }

function suggestName() {
  const f = $("photo").files[0];
  if (!f) return;
  let name = f.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64);
  if (!name || name === "default") name = "photo";
  $("photo-name").value = name;
  uploadMessage("", "");
}

async function checkPhoto(file, name) {
  if (!file) return "Choose a photo first.";
  if (!PHOTO_TYPES.includes(file.type)) return `${file.name} is not a JPEG, PNG or WebP image.`;
  if (file.size > page.upload.max_bytes) {
    return `${file.name} is ${megabytes(file.size)}; this server takes photos up to `
      + `${megabytes(page.upload.max_bytes)}.`;
  }
  if (!NAME_RE.test(name) || name === "default") return `Name "${name}": ${UPLOAD_WORDS.bad_name}.`;
  if (page.avatars.some((a) => a.name === name)) return `An avatar named ${name} exists already; choose another name.`;
  try { // the browser decodes it to count pixels; one it cannot decode is left to the server to judge
    const bmp = await createImageBitmap(file);
    const { width, height } = bmp;
    bmp.close();
    if (width * height > page.upload.max_pixels) {
      return `${file.name} is ${width} × ${height} pixels; this server takes up to `
        + `${(page.upload.max_pixels / 1e6).toFixed(0)} megapixels. Make it smaller and try again.`;
    }
  } catch { /* not decodable here: the server says why */ }
  return null;
}

async function upload(ev) {
  ev.preventDefault();
  if (!page.upload) return;
  const file = $("photo").files[0], name = $("photo-name").value.trim();
  const problem = await checkPhoto(file, name);
  if (problem) return uploadMessage(problem, "error");
  const bar = $("upload-progress"), button = $("upload");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", withToken(`/avatars?name=${encodeURIComponent(name)}`));
  Object.entries(authHeaders()).forEach(([k, v]) => xhr.setRequestHeader(k, v));
  xhr.setRequestHeader("Content-Type", file.type);
  xhr.timeout = 120000;
  bar.hidden = false;
  bar.value = 0;
  button.disabled = true;
  uploadMessage(`Sending ${file.name}…`, "");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  xhr.upload.onload = () => { // sent: the server now decodes it and looks for the face
    bar.removeAttribute("value");
    uploadMessage("Preparing the avatar (finding the face)…", "");
  };
  const finish = (text, kind) => { bar.hidden = true; button.disabled = false; uploadMessage(text, kind); };
  xhr.onerror = () => finish("The upload failed: the connection to the server was lost.", "error");
  xhr.ontimeout = () => finish("The server took too long to prepare the photo; try a smaller one.", "error");
  xhr.onload = async () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: the status says enough */ }
    if (xhr.status === 201) {
      await loadAvatars(name); // in the picker, chosen, before the page says it is there
      finish(`Added avatar ${name}.`, "ok");
      $("photo").value = $("photo-name").value = "";
      log(`Added avatar ${name} from ${file.name}.`);
      return switchAvatar();
    }
    if (xhr.status === 401) return finish(tokenHint(), "error");
    const err = body.error || {};
    const words = UPLOAD_WORDS[err.code] || err.message || `the server answered HTTP ${xhr.status}`;
    finish(`Not added: ${words.replace(/\.$/, "")}.`, "error");
    log(`Upload of ${file.name} refused: ${err.message || words}`); // the server's full reason
  };
  xhr.send(file);
}
