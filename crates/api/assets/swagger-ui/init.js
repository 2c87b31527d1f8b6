// Starts Swagger UI on /api/v1/docs/. A separate file, not an inline <script>: the page is served
// with a Content-Security-Policy that allows scripts from 'self' only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    persistAuthorization: true,
    deepLinking: true,
    // no badge image from validator.swagger.io: this page makes no third-party requests
    validatorUrl: null,
  });
});
