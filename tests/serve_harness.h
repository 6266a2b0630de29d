// Test harness for `biref serve`: the real binary started on a free loopback port, an HTTP
// client (libcurl) and raw sockets for what a well-behaved client never sends. Every wait is
// bounded in time; the destructor kills what it started.
#pragma once
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace biref::test {

inline std::string slurp_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A process started with fork/exec, stdout and stderr into a log file.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path) : log_(log_path) {
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      setpgid(0, 0);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Process() { kill_now(); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const { return slurp_file(log_); }
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_status_ = status;
      pid_ = -1;
      return false;
    }
    return true;
  }
  // Sends `sig` and waits up to `timeout_s` for the exit; then SIGKILL. Returns the wait status.
  int stop(int sig, double timeout_s) {
    if (pid_ > 0) kill(pid_, sig);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (running() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (running()) {
      kill_now();
      return -1;
    }
    return exit_status_;
  }
  // SIGKILL to the process and its group (nginx's workers, a shell's children).
  void kill_now() {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      exit_status_ = status;
      pid_ = -1;
    }
  }
  // Resident memory in MiB (VmRSS), 0 when gone.
  double rss_mb() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return 0;
  }

 private:
  pid_t pid_ = -1;
  int exit_status_ = 0;
  std::string log_;
};

// Waits (at most `timeout_s`) until something accepts connections on the loopback `port`.
inline bool wait_for_port(int port, double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < until) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A temporary folder for one test's servers, logs and configuration.
inline std::string scratch_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("biref-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// redis-server on a free loopback port, no persistence.
class RedisProcess {
 public:
  explicit RedisProcess(const std::string& dir) : port_(free_port()) {
    if (access("/usr/bin/redis-server", X_OK) != 0)
      throw std::runtime_error("redis-server is missing: apt-get install redis-server");
    proc_ = std::make_unique<Process>(
        std::vector<std::string>{"/usr/bin/redis-server", "--port", std::to_string(port_), "--bind",
                                 "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir},
        dir + "/redis.log");
    if (!wait_for_port(port_, 10))
      throw std::runtime_error("redis did not start:\n" + proc_->log());
  }
  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  Process& process() { return *proc_; }

 private:
  int port_;
  std::unique_ptr<Process> proc_;
};

// nginx with deploy/nginx/biref.conf (its upstream servers and listen port rewritten) in a main
// configuration of its own under `dir`.
class NginxProcess {
 public:
  NginxProcess(const std::string& dir, const std::vector<int>& upstream_ports)
      : port_(free_port()) {
    if (access("/usr/sbin/nginx", X_OK) != 0)
      throw std::runtime_error("nginx is missing: apt-get install nginx-light");
    std::string site = slurp_file(std::string(BIREF_SOURCE_DIR) + "/deploy/nginx/biref.conf");
    std::string servers;
    for (int p : upstream_ports)
      servers += "    server 127.0.0.1:" + std::to_string(p) + " max_fails=1 fail_timeout=5s;\n";
    site = std::regex_replace(site, std::regex("( *server 127\\.0\\.0\\.1:[0-9]+ [^\n]*\n)+"),
                              servers);
    site = std::regex_replace(site, std::regex("listen [0-9]+;"),
                              "listen 127.0.0.1:" + std::to_string(port_) + ";");
    std::ofstream(dir + "/biref.conf") << site;
    const bool root = geteuid() == 0;
    std::ofstream(dir + "/nginx.conf")
        << "daemon off;\nworker_processes 1;\npid " << dir << "/nginx.pid;\nerror_log " << dir
        << "/error.log warn;\n"
        << (root ? "user root root;\n" : "") << "events { worker_connections 1024; }\n"
        << "http {\n  access_log " << dir << "/access.log;\n  client_body_temp_path " << dir
        << "/body;\n  proxy_temp_path " << dir << "/proxy;\n  fastcgi_temp_path " << dir
        << "/fastcgi;\n  uwsgi_temp_path " << dir << "/uwsgi;\n  scgi_temp_path " << dir
        << "/scgi;\n  include " << dir << "/biref.conf;\n}\n";
    proc_ = std::make_unique<Process>(
        std::vector<std::string>{"/usr/sbin/nginx", "-p", dir, "-c", dir + "/nginx.conf"},
        dir + "/nginx.out");
    if (!wait_for_port(port_, 10))
      throw std::runtime_error("nginx did not start:\n" + proc_->log() +
                               slurp_file(dir + "/error.log"));
  }
  int port() const { return port_; }
  Process& process() { return *proc_; }

 private:
  int port_;
  std::unique_ptr<Process> proc_;
};

// `biref serve --port 0 ARGS...`, waited for until it prints its port (at most `timeout_s`).
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& args, double timeout_s = 120,
                        const std::string& name = "serve") {
    static int counter = 0;
    const auto dir = std::filesystem::temp_directory_path() / "biref-serve-tests";
    std::filesystem::create_directories(dir);
    log_ =
        (dir / (name + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".log"))
            .string();
    std::vector<std::string> argv = {BIREF_CLI, "serve"};
    bool has_port = false;
    for (const auto& a : args) has_port = has_port || a == "--port";
    if (!has_port) argv.insert(argv.end(), {"--port", "0"});
    argv.insert(argv.end(), args.begin(), args.end());
    proc_ = std::make_unique<Process>(argv, log_);
    const std::regex listening("listening on http://[^:]+:([0-9]+)/");
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < until) {
      std::smatch m;
      const std::string text = proc_->log();
      if (std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
        return;
      }
      if (!proc_->running()) throw std::runtime_error("biref serve exited at start:\n" + text);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("biref serve did not start in time:\n" + proc_->log());
  }
  int port() const { return port_; }
  Process& process() { return *proc_; }
  std::string log() const { return proc_->log(); }

 private:
  std::string log_;
  std::unique_ptr<Process> proc_;
  int port_ = 0;
};

struct HttpResult {
  long status = 0;                             // 0: no answer (curl_error says why)
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body, curl_error;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// One request with libcurl (a new connection each time, unless `keep` is given).
inline HttpResult http_request(int port, const std::string& method, const std::string& target,
                               const std::string& body = "",
                               const std::vector<std::string>& headers = {},
                               double timeout_s = 60) {
  HttpResult r;
  CURL* curl = curl_easy_init();
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + target;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "POST" || !body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
  }
  if (method == "GET" && body.empty()) curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  if (list) curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, long(timeout_s * 1000));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* p, size_t s, size_t n, void* u) {
        static_cast<std::string*>(u)->append(p, s * n);
        return s * n;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(
      curl, CURLOPT_HEADERFUNCTION, +[](char* p, size_t s, size_t n, void* u) {
        std::string line(p, s * n);
        const size_t colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
          std::string value = line.substr(colon + 1);
          while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
          while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
          (*static_cast<std::map<std::string, std::string>*>(u))[name] = value;
        }
        return s * n;
      });
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.headers);
  const CURLcode rc = curl_easy_perform(curl);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  } else {
    r.curl_error = curl_easy_strerror(rc);
  }
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return r;
}

// A multipart/form-data body: fields (name, value) and one file part.
inline std::string multipart_body(const std::string& boundary,
                                  const std::vector<std::pair<std::string, std::string>>& fields,
                                  const std::string& file_field, const std::string& file_bytes,
                                  const std::string& filename = "image.png") {
  std::string b;
  for (const auto& [k, v] : fields)
    b += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + k + "\"\r\n\r\n" + v +
         "\r\n";
  if (!file_field.empty())
    b += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + file_field +
         "\"; filename=\"" + filename + "\"\r\nContent-Type: application/octet-stream\r\n\r\n" +
         file_bytes + "\r\n";
  b += "--" + boundary + "--\r\n";
  return b;
}

// A raw TCP connection to the server, for malformed and slow requests.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  bool ok() const { return fd_ >= 0; }
  bool send_all(const std::string& s) {
    for (size_t done = 0; done < s.size();) {
      const ssize_t n = ::send(fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += size_t(n);
    }
    return true;
  }
  // Reads until the server closes or `timeout_s` passes without a byte.
  std::string read_until_close(double timeout_s) {
    std::string out;
    char buf[4096];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, int(timeout_s * 1000)) <= 0) break;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
    return out;
  }
  void close_now() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace biref::test
