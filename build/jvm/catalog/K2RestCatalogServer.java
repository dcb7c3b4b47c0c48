/*
 * K2's launcher for Iceberg's REST catalog test server, bound to one address (127.0.0.1).
 *
 * org.apache.iceberg.rest.RESTCatalogServer (iceberg-open-api test fixtures) builds its Jetty
 * server with `new Server(port)`, which listens on every interface and has no setting to change
 * that. This class wires the same pieces (the CATALOG_* environment, a JDBC catalog by default,
 * RESTServerCatalogAdapter, RESTCatalogServlet) behind a connector bound to `rest.host`
 * (CATALOG_REST_HOST, default 127.0.0.1). It sits in Iceberg's package because the fixture's
 * classes are package-private; k2.stack.jvm compiles it against the resolved classpath.
 *
 * Configuration, as for RESTCatalogServer: CATALOG_URI (jdbc:sqlite:/path/catalog.db),
 * CATALOG_WAREHOUSE (file:///path), CATALOG_REST_PORT, CATALOG_REST_HOST;
 * `CATALOG_` + name, `__` -> `-`, `_` -> `.`, lower-cased.
 */
package org.apache.iceberg.rest;

import java.util.HashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.iceberg.CatalogProperties;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.apache.iceberg.jdbc.JdbcCatalog;
import org.apache.iceberg.util.PropertyUtil;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public final class K2RestCatalogServer {
  private K2RestCatalogServer() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> props = new HashMap<>(RCKUtils.environmentCatalogConfig());
    props.putIfAbsent(CatalogProperties.CATALOG_IMPL, JdbcCatalog.class.getName());
    props.putIfAbsent("jdbc.schema-version", "V1");
    for (String required : new String[] {CatalogProperties.URI, CatalogProperties.WAREHOUSE_LOCATION}) {
      if (props.get(required) == null) {
        throw new IllegalArgumentException("missing catalog property " + required);
      }
    }
    String host = props.getOrDefault("rest.host", "127.0.0.1");
    int port = PropertyUtil.propertyAsInt(props, RESTCatalogServer.REST_PORT, 8181);

    Catalog catalog = CatalogUtil.buildIcebergCatalog("rest_backend", props, new Configuration());
    RESTCatalogAdapter adapter =
        new RESTServerCatalogAdapter(new RESTCatalogServer.CatalogContext(catalog, props));

    ServletContextHandler context = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    context.addServlet(new ServletHolder(new RESTCatalogServlet(adapter)), "/*");

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost(host);
    connector.setPort(port);
    server.addConnector(connector);
    server.setHandler(context);
    server.setStopAtShutdown(true);
    server.start();
    System.out.println(
        "K2RestCatalogServer listening on http://" + host + ":" + connector.getLocalPort()
            + " warehouse=" + props.get(CatalogProperties.WAREHOUSE_LOCATION));
    server.join();
  }
}
