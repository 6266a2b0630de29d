// The HTTP/1.1 front of `biref serve`, on Boost.Beast: asynchronous connections, so an idle or
// slow client costs a socket and a buffer, never a thread. Every read and write has a deadline
// (headers, body, keep-alive idle, write), the body and header sizes are bounded before they are
// read, and a client that hangs up while its request waits is noticed (RequestContext::
// client_gone) so that the work can be dropped. Handlers answer from any thread.
#pragma once
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <boost/beast/http.hpp>

namespace biref::serve {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// Sends the response of one request; call it exactly once, from any thread.
using Respond = std::function<void(Response&&)>;

struct RequestContext {
  // Set when the client closes its connection before the answer is sent.
  std::shared_ptr<std::atomic<bool>> client_gone;
  std::string peer;  // "127.0.0.1:51234"
};

using Handler =
    std::function<void(Request&& request, const RequestContext& context, Respond respond)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: a free port, see HttpServer::port()
  int io_threads = 1;
  size_t max_body_bytes = size_t(64) << 20;    // larger bodies: 413, before they are read
  size_t max_header_bytes = size_t(16) << 10;  // larger header blocks: 431
  double header_timeout_s = 10;   // from connect (or the previous answer) to the end of the headers
  double body_timeout_s = 60;     // to read the body once the headers are in
  double idle_timeout_s = 30;     // a keep-alive connection waiting for its next request
  double write_timeout_s = 60;    // to send an answer
  size_t max_connections = 4096;  // connections beyond are closed at once
};

// A JSON error answer: {"error": {"kind": KIND, "message": MESSAGE}} with `status`.
Response error_response(http::status status, const std::string& kind, const std::string& message,
                        unsigned version = 11);

class HttpServer {
 public:
  // Binds (a biref::Error naming host:port when it cannot) and starts the I/O threads.
  HttpServer(const ServerOptions& options, Handler handler);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;  // the bound port
  size_t connections() const;
  size_t in_flight() const;  // requests read and not yet answered

  // Stops accepting, closes idle connections, lets requests in flight answer (with
  // "Connection: close") for up to `timeout_s`, then closes everything. Returns whether every
  // request in flight was answered in time.
  bool drain(double timeout_s);
  // Closes everything now and joins the I/O threads. Idempotent.
  void stop();

  struct Impl;  // (public for the connection class of http_server.cpp)

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace biref::serve
