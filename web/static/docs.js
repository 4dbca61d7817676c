// The API reference page (/docs): Swagger UI over /api/openapi.json, from
// the vendored bundle; nothing is fetched from anywhere but this server.
// "Authorize" takes a token from POST /api/auth/login; it is kept for this
// tab only (sessionStorage is not used: a reload asks again).
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
    // No calls to validator.swagger.io: the spec stays on this server.
    validatorUrl: null,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
  });
});
