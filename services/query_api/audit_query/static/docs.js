// Swagger UI from the package's own copy (no CDN), started from a file so no inline script is needed.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  withCredentials: true,
});
