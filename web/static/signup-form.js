// The account form's rules and in-place errors: the username and password
// rules shown under their fields while creating an account (checked as you
// type), and a refused submit's message put next to the field it concerns.

export const USERNAME_RULE = "3–32 characters: a–z, 0–9, _ . - (starting with a letter or digit)";
export const PASSWORD_RULE = "At least 8 characters (at most 256 bytes)";

/** Hints under `username` and `password` (shown in sign-up mode), live-checked. */
export function passwordRules(h, username, password) {
  const userHint = h("small.hint", { id: "username-hint", text: USERNAME_RULE });
  const passHint = h("small.hint", { id: "password-hint", text: PASSWORD_RULE });
  const check = () => {
    const u = username.value.trim();
    userHint.classList.toggle("ok", /^[a-z0-9][a-z0-9_.-]{2,31}$/.test(u));
    passHint.classList.toggle("ok", new TextEncoder().encode(password.value).length >= 8);
  };
  username.addEventListener("input", check);
  password.addEventListener("input", check);
  return {
    userHint,
    passHint,
    show(on) {
      userHint.hidden = passHint.hidden = !on;
      if (on) {
        username.setAttribute("aria-describedby", "username-hint");
        password.setAttribute("aria-describedby", "password-hint");
      } else {
        username.removeAttribute("aria-describedby");
        password.removeAttribute("aria-describedby");
      }
      check();
    },
  };
}

/**
 * Put a refused submit's message next to the field it concerns (`fields`:
 * {username, password, name} → error elements); anything else goes to `general`.
 */
export function showFieldError(ex, fields, general) {
  for (const el of Object.values(fields)) el.textContent = "";
  general.textContent = "";
  const m = (ex && ex.message) || "";
  const field =
    ex && ex.status === 409 ? "username" : /password/i.test(m) ? "password" : /username/i.test(m) ? "username" : /^name/i.test(m) ? "name" : null;
  const el = field && fields[field];
  (el || general).textContent = m;
  return field;
}
