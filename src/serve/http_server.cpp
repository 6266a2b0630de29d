#include "serve/http_server.h"

#include <sys/socket.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/check.h"

namespace biref::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {
std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}
}  // namespace

Response error_response(http::status status, const std::string& kind, const std::string& message,
                        unsigned version) {
  Response r{status, version};
  r.set(http::field::content_type, "application/json");
  r.set(http::field::cache_control, "no-store");
  nlohmann::json j = {{"error", {{"kind", kind}, {"message", message}}}};
  r.body() = j.dump() + "\n";
  return r;
}

class Session;

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  ServerOptions options;
  Handler handler;
  std::atomic<size_t> connections{0}, in_flight{0};
  std::atomic<bool> draining{false}, stopped{false};
  std::mutex mu;
  std::map<uint64_t, std::weak_ptr<Session>> sessions;
  uint64_t next_id = 0;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::vector<std::thread> threads;

  void accept();
  void close_idle();
  std::vector<std::shared_ptr<Session>> live_sessions();
};

// One connection: read a request, hand it to the handler, write its answer, repeat while the
// client keeps the connection alive. All of a session's handlers run on its strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<HttpServer::Impl> server, uint64_t id)
      : stream_(std::move(socket)), server_(std::move(server)), id_(id) {
    ++server_->connections;
    beast::error_code ec;
    const auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  ~Session() { --server_->connections; }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // From any thread: close the connection if it is waiting for a request (drain).
  void close_if_idle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }
  void close_now() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  void read() {
    if (server_->draining) return close();
    parser_.emplace();
    parser_->header_limit(uint32_t(server_->options.max_header_bytes));
    parser_->body_limit(server_->options.max_body_bytes);
    stream_.expires_after(
        seconds(first_ ? server_->options.header_timeout_s : server_->options.idle_timeout_s));
    first_ = false;
    busy_ = false;
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    busy_ = true;
    const auto& req = parser_->get();
    const auto length = parser_->content_length();
    if (length && *length > server_->options.max_body_bytes) {
      return fail(http::status::payload_too_large, "too large",
                  str_cat("the request body is ", *length, " bytes; the limit is ",
                          server_->options.max_body_bytes));
    }
    stream_.expires_after(seconds(server_->options.body_timeout_s));
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      // curl and others wait for this before sending a large body
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(kContinue),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          if (ec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      return close();
    }
    // A read past its deadline: the stream has closed the socket already (as nginx does on
    // client_header_timeout, no answer is sent to a client too slow to send its request).
    if (ec == beast::error::timeout) return close();
    if (ec == http::error::body_limit)
      return fail(http::status::payload_too_large, "too large",
                  str_cat("the request body is larger than the limit of ",
                          server_->options.max_body_bytes, " bytes"));
    if (ec == http::error::header_limit)
      return fail(http::status::request_header_fields_too_large, "too large",
                  str_cat("the request headers are larger than the limit of ",
                          server_->options.max_header_bytes, " bytes"));
    return fail(http::status::bad_request, "invalid input",
                str_cat("malformed HTTP request: ", ec.message()));
  }

  void on_body(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    Request req = parser_->release();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    stream_.expires_never();
    ++server_->in_flight;
    answered_ = false;
    RequestContext ctx;
    ctx.client_gone = std::make_shared<std::atomic<bool>>(false);
    ctx.peer = peer_;
    client_gone_ = ctx.client_gone;
    watch_hangup();
    auto self = shared_from_this();
    Respond respond = [self](Response&& r) {
      auto res = std::make_shared<Response>(std::move(r));
      asio::post(self->stream_.get_executor(), [self, res] { self->send(std::move(*res)); });
    };
    try {
      server_->handler(std::move(req), ctx, respond);
    } catch (const std::exception& e) {
      respond(error_response(http::status::internal_server_error, "internal", e.what(), version_));
    }
  }

  // While the request is being worked on, a readable socket that reads as end-of-file means the
  // client hung up. (Bytes of a pipelined next request stay in the socket for the next read.)
  void watch_hangup() {
    stream_.socket().async_wait(
        tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
          if (ec || self->answered_) return;
          char byte;
          const ssize_t n =
              ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            self->client_gone_->store(true);
          }
        });
  }

  // An answer of the server itself, then the connection closes (the stream may be mid-request).
  void fail(http::status status, const std::string& kind, const std::string& message) {
    keep_alive_ = false;
    ++server_->in_flight;
    answered_ = false;
    send(error_response(status, kind, message, version_));
  }

  void send(Response&& r) {
    if (answered_) return;
    answered_ = true;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);  // the hang-up watch
    if (server_->draining) keep_alive_ = false;
    r.version(version_);
    r.keep_alive(keep_alive_);
    r.prepare_payload();
    res_ = std::make_shared<Response>(std::move(r));
    stream_.expires_after(seconds(server_->options.write_timeout_s));
    http::async_write(stream_, *res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      --self->server_->in_flight;
      self->res_.reset();
      if (ec || !self->keep_alive_) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
    std::lock_guard<std::mutex> lock(server_->mu);
    server_->sessions.erase(id_);
  }

  beast::tcp_stream stream_;
  std::shared_ptr<HttpServer::Impl> server_;
  uint64_t id_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Response> res_;
  std::shared_ptr<std::atomic<bool>> client_gone_;
  bool keep_alive_ = true, first_ = true, busy_ = false, answered_ = true;
  unsigned version_ = 11;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept(
      asio::make_strand(io), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
        if (ec) {
          if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
          // out of descriptors and the like: keep accepting (after a pause, not in a tight loop)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          return self->accept();
        }
        if (self->draining || self->connections >= self->options.max_connections) {
          beast::error_code ignored;
          socket.close(ignored);
        } else {
          std::shared_ptr<Session> s;
          {
            std::lock_guard<std::mutex> lock(self->mu);
            const uint64_t id = self->next_id++;
            s = std::make_shared<Session>(std::move(socket), self, id);
            self->sessions[id] = s;
          }
          s->start();
        }
        self->accept();
      });
}

std::vector<std::shared_ptr<Session>> HttpServer::Impl::live_sessions() {
  std::vector<std::shared_ptr<Session>> live;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [id, w] : sessions)
    if (auto s = w.lock()) live.push_back(std::move(s));
  return live;
}

void HttpServer::Impl::close_idle() {
  for (auto& s : live_sessions()) s->close_if_idle();
}

HttpServer::HttpServer(const ServerOptions& options, Handler handler)
    : impl_(std::make_shared<Impl>()) {
  BIREF_CHECK(options.io_threads >= 1 && options.io_threads <= 64,
              "I/O threads must be 1..64, got ", options.io_threads);
  BIREF_CHECK(options.port >= 0 && options.port <= 65535, "port ", options.port,
              " is not 0..65535");
  impl_->options = options;
  impl_->handler = std::move(handler);
  beast::error_code ec;
  const auto address = asio::ip::make_address(options.host, ec);
  BIREF_CHECK(!ec, "--host '", options.host, "' is not an IP address: ", ec.message());
  const tcp::endpoint ep(address, uint16_t(options.port));
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  BIREF_CHECK_KIND(!ec, ErrorKind::Unavailable, "cannot listen on ", options.host, ":",
                   options.port, ": ", ec.message());
  impl_->accept();
  for (int t = 0; t < options.io_threads; ++t)
    impl_->threads.emplace_back([impl = impl_] { impl->io.run(); });
}

HttpServer::~HttpServer() {
  stop();
}

int HttpServer::port() const {
  beast::error_code ec;
  const auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}
size_t HttpServer::connections() const {
  return impl_->connections;
}
size_t HttpServer::in_flight() const {
  return impl_->in_flight;
}

bool HttpServer::drain(double timeout_s) {
  impl_->draining = true;
  asio::post(impl_->io, [impl = impl_] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  const auto until = std::chrono::steady_clock::now() + seconds(timeout_s);
  bool answered = false;
  while (std::chrono::steady_clock::now() < until) {
    impl_->close_idle();
    if (impl_->in_flight == 0) {
      answered = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop();
  return answered;
}

void HttpServer::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->draining = true;
  for (auto& s : impl_->live_sessions()) s->close_now();
  asio::post(impl_->io, [impl = impl_] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  impl_->io.stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  // Run what is left (the closes, and the aborted operations they complete) on this thread, so
  // that no handler holding a session (and through it this server) stays queued.
  impl_->io.restart();
  while (impl_->io.poll() > 0) {
  }
}

}  // namespace biref::serve
