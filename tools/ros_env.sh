# shellcheck shell=bash
# Source me: `source tools/ros_env.sh`. Environment for running ROS code from the source tree with
# the .venv interpreter and the interfaces built by tools/build_msgs.sh (`make msgs`) in install/.
# Used by the make targets (test, demo, bench); it forces loopback-only DDS settings.
#
#  PYTHONPATH        <repo>:install/lib/pythonX.Y/site-packages  (repo first: the source package
#                    xnet_ros wins; its __init__ extends __path__ so xnet_ros.msg is found in install/)
#  LD_LIBRARY_PATH   install/lib (generated typesupport libraries) and .venv/lib
#  AMENT_PREFIX_PATH install/ and .venv (ament index: typesupports, package share dirs)
#  DDS               loopback only, from xnet_ros/loopback.py (the one definition, shared with
#                    the demo and the tests): ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT +
#                    config/fastdds_localhost.xml (127.0.0.1 + shared memory only),
#                    RMW_IMPLEMENTATION=rmw_fastrtps_cpp, ROS_DOMAIN_ID random 1..100 unless
#                    set, ROS_LOG_DIR a temp dir unless set.

_xnet_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_xnet_venv=$_xnet_root/.venv
_xnet_install=$_xnet_root/install

# prepend a directory to a :-separated variable unless it is already there
_xnet_prepend() {
  local var=$1 dir=$2 cur
  cur=${!var:-}
  case ":$cur:" in
    *":$dir:"*) ;;
    *) export "$var=$dir${cur:+:$cur}" ;;
  esac
}

_xnet_site=""
for _d in "$_xnet_install"/lib/python3*/site-packages; do
  if [[ -d $_d ]]; then _xnet_site=$_d; fi
done
if [[ -z $_xnet_site ]]; then
  echo "ros_env.sh: $_xnet_install has no built interfaces; run 'make msgs'" >&2
else
  _xnet_prepend PYTHONPATH "$_xnet_site"
fi
_xnet_prepend PYTHONPATH "$_xnet_root"
_xnet_prepend LD_LIBRARY_PATH "$_xnet_venv/lib"
_xnet_prepend LD_LIBRARY_PATH "$_xnet_install/lib"
_xnet_prepend AMENT_PREFIX_PATH "$_xnet_venv"
_xnet_prepend AMENT_PREFIX_PATH "$_xnet_install"
_xnet_prepend PATH "$_xnet_venv/bin"

# loopback-only DDS (forced: these targets must never talk to the network)
_xnet_python=$_xnet_venv/bin/python
[[ -x $_xnet_python ]] || _xnet_python=python3
eval "$("$_xnet_python" -I "$_xnet_root/xnet_ros/loopback.py")"

unset _xnet_root _xnet_venv _xnet_install _xnet_site _xnet_python _d
unset -f _xnet_prepend
